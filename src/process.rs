//! The process's own resource use, read from Linux `/proc` (the standard
//! `process_*` metrics): CPU time and start time from `/proc/self/stat`,
//! memory from `/proc/self/status`, open descriptors from `/proc/self/fd`
//! and their limit from `/proc/self/limits`. Read when `/metrics` is
//! scraped; elsewhere than on Linux nothing is read.

use std::io;

/// Clock ticks per second of `/proc` times (`USER_HZ`): 100 on every Linux
/// architecture this builds for, as the Prometheus client libraries take it.
const USER_HZ: f64 = 100.0;

/// What the process uses, at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessStats {
    /// User and system CPU time, in seconds.
    pub cpu_seconds: f64,
    /// Resident memory (VmRSS), in bytes.
    pub resident_bytes: u64,
    /// Virtual memory (VmSize), in bytes.
    pub virtual_bytes: u64,
    /// Open file descriptors.
    pub open_fds: u64,
    /// The soft limit of open file descriptors (`None`: unlimited).
    pub max_fds: Option<u64>,
    /// When the process started, in seconds since the Unix epoch.
    pub start_time_seconds: f64,
}

fn malformed(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("cannot parse {what}"))
}

/// Reads the process's figures from `/proc` (blocking, but `/proc` never
/// waits for a disk).
pub fn read() -> io::Result<ProcessStats> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let (ticks, start_ticks) = parse_stat(&stat).ok_or_else(|| malformed("/proc/self/stat"))?;
    let status = std::fs::read_to_string("/proc/self/status")?;
    let kib = |field| status_kib(&status, field).ok_or_else(|| malformed("/proc/self/status"));
    let boot = boot_time(&std::fs::read_to_string("/proc/stat")?)
        .ok_or_else(|| malformed("/proc/stat"))?;
    let open_fds = std::fs::read_dir("/proc/self/fd")?.count() as u64;
    let max_fds = max_open_files(&std::fs::read_to_string("/proc/self/limits")?);
    Ok(ProcessStats {
        cpu_seconds: ticks as f64 / USER_HZ,
        resident_bytes: kib("VmRSS:")? * 1024,
        virtual_bytes: kib("VmSize:")? * 1024,
        open_fds,
        max_fds,
        start_time_seconds: boot as f64 + start_ticks as f64 / USER_HZ,
    })
}

/// The soft limit of open file descriptors (`Ok(None)`: unlimited).
pub fn max_fds() -> io::Result<Option<u64>> {
    Ok(max_open_files(&std::fs::read_to_string(
        "/proc/self/limits",
    )?))
}

/// From `/proc/self/stat`: user plus system time, and the start time after
/// boot, both in clock ticks. The command name (field 2) is in parentheses
/// and may hold spaces and parentheses itself: fields are counted after
/// its last `)`.
fn parse_stat(stat: &str) -> Option<(u64, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): utime is field 14, stime 15,
    // starttime 22.
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some((field(14)? + field(15)?, field(22)?))
}

/// A `kB` line of `/proc/self/status`, e.g. `VmRSS:   1234 kB`.
fn status_kib(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The boot time (`btime`) of `/proc/stat`, in seconds since the epoch.
fn boot_time(stat: &str) -> Option<u64> {
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

/// The soft limit of `Max open files` in `/proc/self/limits`.
fn max_open_files(limits: &str) -> Option<u64> {
    limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        // A command name with spaces and a parenthesis, as a process may
        // set it.
        let stat = "4242 (risk (stream) x) S 1 4242 4242 0 -1 4194560 1520 0 0 0 \
                    250 75 0 0 20 0 3 0 123456 10485760 2560 18446744073709551615";
        assert_eq!(parse_stat(stat), Some((325, 123456)));
        assert_eq!(parse_stat("4242 (cut"), None);
        assert_eq!(parse_stat("1 (x) S 1"), None);
    }

    #[test]
    fn status_limits_and_boot_time_parse() {
        let status =
            "Name:\triskstream\nVmPeak:\t  20000 kB\nVmSize:\t  18000 kB\nVmRSS:\t   5120 kB\n";
        assert_eq!(status_kib(status, "VmRSS:"), Some(5120));
        assert_eq!(status_kib(status, "VmSize:"), Some(18000));
        assert_eq!(status_kib(status, "VmSwap:"), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(max_open_files(limits), Some(1024));
        assert_eq!(
            max_open_files(
                "Max open files            unlimited            unlimited            files\n"
            ),
            None
        );
        assert_eq!(
            boot_time("cpu  1 2 3\nbtime 1767225600\nprocesses 10\n"),
            Some(1767225600)
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_reads() {
        let s = read().expect("/proc reads");
        assert!(s.resident_bytes > 0 && s.virtual_bytes >= s.resident_bytes);
        assert!(s.open_fds >= 3);
        assert!(s.start_time_seconds > 1.6e9);
    }
}
