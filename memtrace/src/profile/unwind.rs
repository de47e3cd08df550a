//! Unwinding copied user-stack snapshots from `.eh_frame` (framehop). Built by the symbols
//! engineer.
