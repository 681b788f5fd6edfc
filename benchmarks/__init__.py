"""Side-by-side measurements (``python -m benchmarks.<name>``); see README.md here."""

from jaxseg import cpu_flags

cpu_flags.use_huge_pages()  # `python -m benchmarks.x`: once, with huge pages (cpu_flags.py)
