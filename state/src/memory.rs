//! Allocator policy for long-running processes that hold an informer
//! snapshot (node agent, proxy, DNS server). Their heap is large and changes
//! slowly, while lists and full rebuilds allocate several times the size of
//! what they keep and free it again. glibc keeps freed memory in the arena
//! of the thread that freed it, so without these calls that transient memory
//! stays in the RSS. (A process using another global allocator, like
//! podnet-dns with jemalloc, finds both calls harmless.) The `unsafe` of the
//! libc calls lives here so that consumers stay free of it.

/// Caps glibc's arenas at two (the main one and one shared by all other
/// threads). Call before any thread is started: the informer decoding on
/// tokio workers and a sync's transient plans otherwise leave several arenas
/// each holding tens of MB no other thread reuses (podnet-proxy at 10k
/// services: ~55 MB RSS instead of ~37 MB).
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tunables.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Gives memory freed in the arenas back to the kernel, after a list or a
/// full rebuild freed what it transiently held.
pub fn release_freed() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory of the allocator's arenas.
    unsafe {
        libc::malloc_trim(0);
    }
}
