//! Writing a symbolized capture: text, folded stacks, pprof, SVG flame graph, JSON. Built by the
//! symbols engineer.
