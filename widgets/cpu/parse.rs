//! Pure part of the Linux CPU reader, compiled and tested on every OS: the `cpu` lines of
//! `/proc/stat`, `/proc/loadavg`, and the physical core count of `/proc/cpuinfo`. The formats
//! are the kernel's `Documentation/filesystems/proc.rst` ("Miscellaneous kernel statistics in
//! /proc/stat", "/proc/loadavg").

use std::collections::BTreeSet;

use crate::ParseError;

/// Time one CPU (or all of them) spent in each state since boot, in clock ticks (`USER_HZ`).
/// `guest` and `guest_nice`, the last two columns, are already counted in `user` and `nice`
/// (the kernel adds them to both), so they are not kept: busy and total time come out the
/// same as with them subtracted and added back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct CpuTimes {
    /// Normal processes in user mode (guest time included).
    pub user: u64,
    /// Niced processes in user mode (niced guest time included).
    pub nice: u64,
    /// Kernel mode.
    pub system: u64,
    /// Idle.
    pub idle: u64,
    /// Idle while waiting for I/O (idle time: the CPU could have run something else).
    pub iowait: u64,
    /// Servicing hardware interrupts.
    pub irq: u64,
    /// Servicing softirqs.
    pub softirq: u64,
    /// Taken by the hypervisor for other guests (time this machine wanted the CPU).
    pub steal: u64,
}

impl CpuTimes {
    /// Ticks spent working: every state but `idle` and `iowait` (what `sysinfo` and `top`
    /// count as used).
    pub fn busy(&self) -> u64 {
        [self.user, self.nice, self.system, self.irq, self.softirq, self.steal]
            .into_iter()
            .fold(0u64, u64::saturating_add)
    }

    /// Every tick, busy or idle.
    pub fn total(&self) -> u64 {
        self.busy().saturating_add(self.idle).saturating_add(self.iowait)
    }

    /// The ticks from `earlier` to `self`, state by state; `None` when any counter went
    /// backwards (a reset or a wrap: the two readings cannot be compared).
    pub fn since(&self, earlier: &CpuTimes) -> Option<CpuTimes> {
        Some(CpuTimes {
            user: self.user.checked_sub(earlier.user)?,
            nice: self.nice.checked_sub(earlier.nice)?,
            system: self.system.checked_sub(earlier.system)?,
            idle: self.idle.checked_sub(earlier.idle)?,
            iowait: self.iowait.checked_sub(earlier.iowait)?,
            irq: self.irq.checked_sub(earlier.irq)?,
            softirq: self.softirq.checked_sub(earlier.softirq)?,
            steal: self.steal.checked_sub(earlier.steal)?,
        })
    }
}

/// The `cpu` lines of `/proc/stat`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct CpuStat {
    /// The `cpu` line: every CPU added up.
    pub total: CpuTimes,
    /// One `cpuN` line per online CPU as `(N, times)`, in the file's order. An offline CPU
    /// has no line, so the numbers can have gaps.
    pub cores: Vec<(u32, CpuTimes)>,
}

/// Parse the `cpu` and `cpuN` lines at the top of `/proc/stat` (`cpu  301854 612 111922 …`:
/// user, nice, system, idle, iowait, irq, softirq, steal, guest, guest_nice). Columns that
/// an old kernel does not print (before 2.6.11 there is no steal) count as 0; at least user,
/// nice, system and idle are required. Reading stops at the first other line (`intr`, the
/// longest line of the file, is not looked at).
pub fn parse_proc_stat_cpus(text: &str) -> Result<CpuStat, ParseError> {
    if text.trim().is_empty() {
        return Err(ParseError::Empty);
    }
    let mut total = None;
    let mut cores = Vec::new();
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let Some(name) = fields.next().and_then(|n| n.strip_prefix("cpu")) else {
            if total.is_some() {
                break;
            }
            continue;
        };
        let times = parse_times(fields, line)?;
        if name.is_empty() {
            total.get_or_insert(times);
        } else {
            let id: u32 = name.parse().map_err(|_| ParseError::bad_value("cpu number", line))?;
            cores.push((id, times));
        }
    }
    let total = total.ok_or(ParseError::MissingField("cpu"))?;
    Ok(CpuStat { total, cores })
}

/// The time columns of one `cpu` line.
fn parse_times<'a>(fields: impl Iterator<Item = &'a str>, line: &str) -> Result<CpuTimes, ParseError> {
    let mut values = [0u64; 8];
    let mut seen = 0;
    for (slot, field) in values.iter_mut().zip(fields) {
        *slot = field.parse().map_err(|_| ParseError::bad_value("cpu ticks", line))?;
        seen += 1;
    }
    if seen < 4 {
        return Err(ParseError::bad_value("cpu ticks", line));
    }
    let [user, nice, system, idle, iowait, irq, softirq, steal] = values;
    Ok(CpuTimes { user, nice, system, idle, iowait, irq, softirq, steal })
}

/// The three load averages of `/proc/loadavg` (runnable and uninterruptible tasks averaged
/// over 1, 5 and 15 minutes).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct LoadAvg {
    /// Over 1 minute.
    pub one: f64,
    /// Over 5 minutes.
    pub five: f64,
    /// Over 15 minutes.
    pub fifteen: f64,
}

/// Parse `/proc/loadavg` (`0.21 0.37 0.39 1/719 19737`): the first three fields, each a
/// finite number not below 0.
pub fn parse_loadavg(text: &str) -> Result<LoadAvg, ParseError> {
    let mut fields = text.split_ascii_whitespace();
    let mut next = |field: &'static str| {
        let value = fields.next().ok_or(if text.trim().is_empty() {
            ParseError::Empty
        } else {
            ParseError::MissingField(field)
        })?;
        value
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0)
            .ok_or_else(|| ParseError::bad_value(field, value))
    };
    Ok(LoadAvg { one: next("load 1 min")?, five: next("load 5 min")?, fifteen: next("load 15 min")? })
}

/// The number of physical cores in `/proc/cpuinfo`: distinct (`physical id`, `core id`)
/// pairs over the `processor` blocks; a block without those ids (ARM, RISC-V, some VMs)
/// counts as a core of its own. This is `sysinfo`'s count (and `lscpu`'s "Core(s) per
/// socket × Socket(s)" on x86).
pub fn parse_cpuinfo_physical_cores(text: &str) -> Result<usize, ParseError> {
    if text.trim().is_empty() {
        return Err(ParseError::Empty);
    }
    let mut cores: BTreeSet<(Option<&str>, &str)> = BTreeSet::new();
    // The `processor`, `core id` and `physical id` of the block being read.
    let mut block: [Option<&str>; 3] = [None; 3];
    for line in text.lines().chain([""]) {
        if line.trim().is_empty() {
            match std::mem::take(&mut block) {
                [_, Some(core), Some(package)] => cores.insert((Some(package), core)),
                [Some(processor), _, _] => cores.insert((None, processor)),
                _ => false,
            };
            continue;
        }
        let Some((key, value)) = line.split_once(':') else { continue };
        let slot = match key.trim() {
            "processor" => 0,
            "core id" => 1,
            "physical id" => 2,
            _ => continue,
        };
        block[slot] = Some(value.trim());
    }
    match cores.len() {
        0 => Err(ParseError::MissingField("processor")),
        n => Ok(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::golden::{check_golden, check_robust, fixture, result_json};

    pub(crate) fn render(name: &str, body: &str) -> Option<serde_json::Value> {
        if name.starts_with("proc-stat") {
            Some(result_json(parse_proc_stat_cpus(body)))
        } else if name.starts_with("proc-loadavg") {
            Some(result_json(parse_loadavg(body)))
        } else if name.starts_with("proc-cpuinfo") {
            Some(result_json(parse_cpuinfo_physical_cores(body)))
        } else {
            None
        }
    }

    fn parse_any(text: &str) {
        if let Ok(stat) = parse_proc_stat_cpus(text) {
            let _ = crate::cpu::usage::per_core(&stat.cores, &stat.cores);
            let _ = crate::cpu::usage::percent(Some(&stat.total), &stat.total);
        }
        let _ = parse_loadavg(text);
        let _ = parse_cpuinfo_physical_cores(text);
    }

    #[test]
    fn fixtures_match_their_golden_files() {
        check_golden("cpu", render);
    }

    #[test]
    fn parsers_never_panic() {
        check_robust("cpu", parse_any, render);
    }

    #[test]
    fn guest_time_is_part_of_user_time() {
        let stat = parse_proc_stat_cpus(&fixture("cpu", "proc-stat--8cpu-guest-columns-node_exporter.txt"));
        let stat = stat.expect("parses");
        assert_eq!(stat.cores.iter().map(|(id, _)| *id).collect::<Vec<_>>(), (0..8).collect::<Vec<u32>>());
        assert_eq!(
            stat.total,
            CpuTimes {
                user: 301_854,
                nice: 612,
                system: 111_922,
                idle: 8_979_004,
                iowait: 3552,
                irq: 2,
                softirq: 3944,
                steal: 0
            }
        );
        assert_eq!(stat.total.busy(), 301_854 + 612 + 111_922 + 2 + 3944);
        assert_eq!(stat.total.total(), stat.total.busy() + 8_979_004 + 3552);
    }

    #[test]
    fn old_kernels_short_lines_and_gaps() {
        // Linux 2.4 printed four columns; an offline CPU leaves a gap in the numbers.
        let stat = parse_proc_stat_cpus("cpu  10 0 5 85\ncpu0 4 0 2 44\ncpu2 6 0 3 41\nintr 1 2\n").expect("parses");
        assert_eq!(stat.cores.iter().map(|(id, _)| *id).collect::<Vec<_>>(), vec![0, 2]);
        assert_eq!(stat.total.total(), 100);
        assert_eq!(parse_proc_stat_cpus("cpu  1 2 3\n"), Err(ParseError::bad_value("cpu ticks", "cpu  1 2 3")));
        assert_eq!(parse_proc_stat_cpus("intr 1 2\n"), Err(ParseError::MissingField("cpu")));
        assert!(parse_proc_stat_cpus("cpu  1 2 3 x\n").is_err());
        assert!(parse_proc_stat_cpus("cpu  1 2 3 4\ncpuX 1 2 3 4\n").is_err());
    }

    #[test]
    fn load_averages() {
        let load = parse_loadavg(&fixture("cpu", "proc-loadavg--node_exporter.txt")).expect("parses");
        assert_eq!(load, LoadAvg { one: 0.21, five: 0.37, fifteen: 0.39 });
        assert_eq!(parse_loadavg(""), Err(ParseError::Empty));
        assert_eq!(parse_loadavg("0.1 0.2\n"), Err(ParseError::MissingField("load 15 min")));
        assert!(parse_loadavg("NaN 0.2 0.3\n").is_err() && parse_loadavg("-1 0.2 0.3\n").is_err());
    }

    #[test]
    fn physical_cores_of_hyperthreaded_riscv_and_kvm() {
        let count = |name: &str| parse_cpuinfo_physical_cores(&fixture("cpu", name));
        assert_eq!(count("proc-cpuinfo--i7-8650u-4core-8thread-node_exporter.txt"), Ok(4));
        assert_eq!(count("proc-cpuinfo--riscv64-visionfive2-no-core-id-ruyisdk.txt"), Ok(4));
        let kvm = fixture("machine", "proc-cpuinfo--xeon-kvm-2cpu-captured.txt");
        assert_eq!(parse_cpuinfo_physical_cores(&kvm), Ok(2));
        // Two sockets with the same core ids are two cores each.
        let two_sockets =
            "processor : 0\nphysical id : 0\ncore id : 0\n\nprocessor : 1\nphysical id : 1\ncore id : 0\n";
        assert_eq!(parse_cpuinfo_physical_cores(two_sockets), Ok(2));
        assert_eq!(parse_cpuinfo_physical_cores("flags : fpu\n"), Err(ParseError::MissingField("processor")));
    }
}
