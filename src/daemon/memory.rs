//! Giving freed heap memory back to the system.
//!
//! glibc's malloc gives each thread that allocates its own arena (up to
//! eight per core) and returns freed pages to the system only from the top
//! of each heap. A burst of work to thousands of receiver hosts leaves many
//! arenas with free but resident pages, so RSS stays at its peak long after
//! the work is done. Fewer arenas and an explicit trim once the daemon is
//! idle bring RSS back to its idle size. Other allocators and C libraries
//! manage this themselves: there these are no-ops.

/// Arenas glibc may create: the runtime's worker threads share them, which
/// costs little contention at the daemon's allocation rate.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const ARENAS: libc::c_int = 2;

/// Caps glibc's malloc arenas. Call before any thread is started.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called before any
    // other thread exists, nothing allocates concurrently.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, ARENAS);
    }
}

/// Returns free heap pages to the system (cheap when little is free).
pub fn give_back() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim is thread-safe; it takes each arena's lock.
    unsafe {
        libc::malloc_trim(0);
    }
}
