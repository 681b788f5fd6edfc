"""One script per published loss comparison (``python -m experiments.<study>``)."""

from jaxseg import cpu_flags

cpu_flags.use_huge_pages()  # `python -m experiments.x`: once, with huge pages (cpu_flags.py)
cpu_flags.apply()  # before any JAX computation: see jaxseg/cpu_flags.py
