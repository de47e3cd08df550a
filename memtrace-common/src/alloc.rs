//! Types of the allocator profiler (`memtrace-alloc` eBPF object) shared with userspace.
