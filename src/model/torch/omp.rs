//! Loops of our own run on libtorch's OpenMP threads.
//!
//! Between libtorch's parallel regions its OpenMP workers spin, waiting for the next one, so a
//! thread we start then competes with a spinning worker for a core: on 2 cores the dropout mask
//! fill ran at about one thread's speed while a worker spun beside it (perf samples of a
//! training step, AMD EPYC). An OpenMP parallel region of libtorch's own runtime hands the
//! work to those same workers instead.
use std::ffi::{c_int, c_uint, c_void, CStr};
use std::sync::OnceLock;

type Region = extern "C" fn(*mut c_void);

/// The entry points of the OpenMP runtime libtorch loaded (GNU libgomp, or one with its ABI).
struct Runtime {
    parallel: unsafe extern "C" fn(Region, *mut c_void, c_uint, c_uint),
    thread_num: unsafe extern "C" fn() -> c_int,
    num_threads: unsafe extern "C" fn() -> c_int,
}

fn runtime() -> Option<&'static Runtime> {
    static RUNTIME: OnceLock<Option<Runtime>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            let find = |name: &CStr| {
                // SAFETY: dlsym with RTLD_DEFAULT only looks a name up in the loaded libraries.
                let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
                (!p.is_null()).then_some(p)
            };
            let (parallel, thread_num, num_threads) =
                (find(c"GOMP_parallel")?, find(c"omp_get_thread_num")?, find(c"omp_get_num_threads")?);
            // SAFETY: these are libgomp's C functions with these signatures (GOMP_parallel is
            // what GCC emits for `#pragma omp parallel`, since GCC 4.9).
            unsafe {
                Some(Runtime {
                    parallel: std::mem::transmute::<*mut c_void, unsafe extern "C" fn(Region, *mut c_void, c_uint, c_uint)>(parallel),
                    thread_num: std::mem::transmute::<*mut c_void, unsafe extern "C" fn() -> c_int>(thread_num),
                    num_threads: std::mem::transmute::<*mut c_void, unsafe extern "C" fn() -> c_int>(num_threads),
                })
            }
        })
        .as_ref()
}

/// Calls `f(thread, threads)` once on each thread of an OpenMP team of libtorch's size (the
/// calling thread is one of them) and returns when all are done; without an OpenMP runtime,
/// `f(0, 1)` on the calling thread.
pub fn for_each_thread(f: &(dyn Fn(usize, usize) + Sync)) {
    let Some(omp) = runtime() else {
        return f(0, 1);
    };
    extern "C" fn region(data: *mut c_void) {
        // SAFETY: `data` points at the pair below, alive until GOMP_parallel returns, and the
        // runtime was found before the region started.
        let (f, omp) = unsafe { &*(data as *const (&(dyn Fn(usize, usize) + Sync), &Runtime)) };
        let (thread, threads) = unsafe { ((omp.thread_num)(), (omp.num_threads)()) };
        f(thread as usize, threads as usize);
    }
    let mut data = (f, omp);
    // SAFETY: GOMP_parallel runs `region` on every thread of the team with `data` and waits
    // for all of them; 0 threads means the calling thread's OpenMP setting (set_num_threads).
    unsafe { (omp.parallel)(region, &mut data as *mut _ as *mut c_void, 0, 0) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn every_thread_of_the_team_runs_once() {
        assert!(runtime().is_some(), "libtorch's OpenMP runtime not found");
        tch::set_num_threads(2);
        let calls = AtomicUsize::new(0);
        let seen = AtomicUsize::new(0);
        let team = AtomicUsize::new(0);
        // No asserts inside: a panic cannot unwind out of the OpenMP region.
        for_each_thread(&|thread, threads| {
            calls.fetch_add(1, Ordering::SeqCst);
            seen.fetch_or(1 << thread, Ordering::SeqCst);
            team.store(threads, Ordering::SeqCst);
        });
        let (calls, team) = (calls.into_inner(), team.into_inner());
        assert_eq!(calls, team);
        assert_eq!(seen.into_inner(), (1 << team) - 1);
    }
}
