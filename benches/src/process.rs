//! Facts about this process and the page cache that the benchmarks report or control.
//!
//! Linux only: peak memory comes from `/proc/self/status`, CPU time from `getrusage`, and
//! eviction uses `posix_fadvise(POSIX_FADV_DONTNEED)`.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

/// Returns the peak resident set size of this process in bytes (`VmHWM` of
/// `/proc/self/status`).
///
/// # Errors
/// Fails when the file cannot be read or has no `VmHWM` line, as on systems other than Linux.
pub fn peak_rss_bytes() -> io::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    parse_vm_hwm(&status).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "/proc/self/status has no valid VmHWM line",
        )
    })
}

/// Returns the CPU time this process has used so far, user plus system, in seconds.
///
/// # Errors
/// Fails when `getrusage` fails, which Linux does only for an invalid argument.
pub fn cpu_seconds() -> io::Result<f64> {
    // SAFETY: `rusage` is plain data, so all zeros is a valid value, and `getrusage` writes
    // only into the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: the pointer refers to a live, writable `rusage`.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let seconds = |time: libc::timeval| time.tv_sec as f64 + time.tv_usec as f64 / 1e6;
    Ok(seconds(usage.ru_utime) + seconds(usage.ru_stime))
}

/// Reads the `VmHWM:  123456 kB` line of a `/proc/PID/status` text, in bytes.
fn parse_vm_hwm(status: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: u64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    kib.checked_mul(1024)
}

/// Asks the kernel to drop the cached pages of every file under `dir`, so that the next read
/// comes from the disk. Returns the number of files.
///
/// Only clean pages are dropped, so the files must have been synced. A virtual disk may still
/// serve the reads from the host's cache.
///
/// # Errors
/// Fails, naming the path, when a folder cannot be listed or a file cannot be opened or advised.
pub fn evict_from_page_cache(dir: &Path) -> io::Result<usize> {
    let mut files = 0;
    let with_path = |error: io::Error, path: &Path| {
        io::Error::new(error.kind(), format!("{}: {error}", path.display()))
    };
    for entry in std::fs::read_dir(dir).map_err(|error| with_path(error, dir))? {
        let entry = entry.map_err(|error| with_path(error, dir))?;
        let path = entry.path();
        if entry
            .file_type()
            .map_err(|error| with_path(error, &path))?
            .is_dir()
        {
            files += evict_from_page_cache(&path)?;
            continue;
        }
        let file = File::open(&path).map_err(|error| with_path(error, &path))?;
        // SAFETY: the descriptor stays open for the whole call. Offset 0 with length 0 covers
        // the whole file, and the call reads no memory of this process.
        let result =
            unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        if result != 0 {
            return Err(with_path(io::Error::from_raw_os_error(result), &path));
        }
        files += 1;
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_hwm_line_is_parsed_in_bytes() {
        let status = "Name:\tload\nVmPeak:\t  300 kB\nVmHWM:\t   2048 kB\nVmRSS:\t  1024 kB\n";
        assert_eq!(parse_vm_hwm(status), Some(2048 * 1024));
    }

    #[test]
    fn missing_vm_hwm_line_gives_none() {
        assert_eq!(parse_vm_hwm("Name:\tload\n"), None);
    }

    #[test]
    fn peak_rss_of_this_process_is_positive() {
        assert!(peak_rss_bytes().expect("Linux /proc") > 0);
    }

    #[test]
    fn cpu_time_of_this_process_is_positive() {
        let mut spin: u64 = 0;
        for i in 0..1_000_000_u64 {
            spin = std::hint::black_box(spin.wrapping_add(i));
        }
        assert!(cpu_seconds().expect("getrusage") > 0.0);
    }

    #[test]
    fn eviction_counts_files_in_subfolders() {
        let dir = tempfile::tempdir().expect("temporary folder");
        std::fs::create_dir(dir.path().join("sub")).expect("subfolder");
        std::fs::write(dir.path().join("a"), b"a").expect("file a");
        std::fs::write(dir.path().join("sub/b"), b"b").expect("file b");
        assert_eq!(evict_from_page_cache(dir.path()).expect("evict"), 2);
    }
}
