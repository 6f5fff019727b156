//! SVG chart of package size and BTF cost across packages.
