"""The pure helpers of benchmarks/train_step.py: FLOP counts and each contender's XLA flags."""

from absl.testing import absltest

from benchmarks import train_step
from jaxseg import cpu_flags


class ConvCountTest(absltest.TestCase):

  def test_layers_follow_the_seed_000_unet(self):
    layers = train_step.conv_layers(8, 128)
    self.assertLen(layers, 11)
    self.assertEqual(layers[0], ("ConvBlock_0/Conv_0", (8, 128, 128, 1), 64, 3))
    # The decoder's first convolutions read the upsampled features concatenated with the skip.
    self.assertEqual(layers[6], ("ConvBlock_3/Conv_0", (8, 64, 64, 384), 128, 3))
    self.assertEqual(layers[8], ("ConvBlock_4/Conv_0", (8, 128, 128, 192), 64, 3))
    self.assertEqual(layers[-1], ("Conv_0", (8, 128, 128, 64), train_step.NUM_CLASSES, 1))
    quarter = train_step.conv_layers(2, 64, width=0.25)
    self.assertEqual(quarter[8], ("ConvBlock_4/Conv_0", (2, 64, 64, 48), 16, 3))

  def test_flops_by_hand(self):
    # One 3x3 pass of 64 -> 64 channels at 8 x 128 x 128: 2 * 131072 pixels * 64 * 64 * 9.
    self.assertEqual(train_step.layer_flops((8, 128, 128, 64), 64, 3), 2 * 131072 * 64 * 64 * 9)
    counts = train_step.conv_flops(8, 128)
    per = [train_step.layer_flops(s, c, k) for _, s, c, k in train_step.conv_layers(8, 128)]
    self.assertEqual(counts["forward"], sum(per))
    # Forward + weight gradient of every layer + input gradient of all but the first.
    self.assertEqual(counts["train_step"], 3 * sum(per) - per[0])
    self.assertAlmostEqual(counts["train_step"] / 1e9, 348.6, delta=0.05)


class XlaFlagsTest(absltest.TestCase):

  def test_library_gets_jaxseg_flag_and_threads(self):
    flags = train_step.xla_flags({"framework": "jax"}, 2, "--xla_dump_to=/tmp/x")
    self.assertTrue(flags.startswith("--xla_dump_to=/tmp/x "))
    self.assertIn(cpu_flags.YNN_FLAG, flags)
    self.assertIn("intra_op_parallelism_threads=2", flags)
    self.assertIn("--xla_cpu_multi_thread_eigen=true", flags)

  def test_variants_keep_their_own_flags(self):
    defaults = train_step.xla_flags(dict(train_step.JAX_VARIANTS["xla-defaults"]), 1)
    self.assertNotIn("ynn_fusion_type", defaults)
    self.assertIn("--xla_cpu_multi_thread_eigen=false", defaults)
    eigen = train_step.xla_flags(dict(train_step.JAX_VARIANTS["eigen"]), 2)
    self.assertEqual(eigen.count("ynn_fusion_type"), 1)
    self.assertIn("--xla_cpu_experimental_ynn_fusion_type= ", eigen)

  def test_worker_environment(self):
    env = train_step.worker_environment({"framework": "torch", "malloc": "glibc.malloc.hugetlb=0"},
                                        3)
    self.assertEqual(env["OMP_NUM_THREADS"], "3")
    self.assertEqual(env["GLIBC_TUNABLES"], "glibc.malloc.hugetlb=0")


if __name__ == "__main__":
  absltest.main()
