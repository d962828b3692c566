"""hrtemnet in napari: open focal series, find and classify their columns, correct them, export CSV.

The npe2 manifest (`hrtemnet/napari.yaml`) registers the reader and the "Find columns" widget;
notebooks use `add_columns(viewer, layer)`. Nothing here is imported by `import hrtemnet` or the CLI.
"""

from hrtemnet.napari._columns import add_columns, export_columns, layer_table, set_class, summary_line
from hrtemnet.napari._reader import read_series

__all__ = ["add_columns", "export_columns", "layer_table", "read_series", "set_class", "summary_line"]
