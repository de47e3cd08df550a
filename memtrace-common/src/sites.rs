//! Types of the growth-site profiler (`memtrace-sites` eBPF object) shared with userspace.
