"""One script per published loss comparison (``python -m experiments.<study>``)."""

from jaxseg import cpu_flags

cpu_flags.apply()  # before any JAX computation: see jaxseg/cpu_flags.py
