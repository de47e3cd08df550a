//! Addresses to functions, files and lines (blazesym). Built by the symbols engineer.
