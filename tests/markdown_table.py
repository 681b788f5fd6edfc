"""Reading the Markdown tables that the benchmarks print, for their tests."""


def table_cells(text: str) -> list[list[str]]:
  """The stripped cells of every table row in ``text`` (header rows included, separator rows
  ``|---|`` left out)."""
  return [[cell.strip() for cell in line.strip().strip("|").split("|")]
          for line in text.splitlines() if line.startswith("|") and not line.startswith("|---")]
