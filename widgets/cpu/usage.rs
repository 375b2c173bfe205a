//! CPU utilisation from two readings of the tick counters (pure arithmetic, tested without a
//! kernel). Utilisation over an interval is the busy ticks between the two readings over all
//! the ticks between them (busy and idle as [`CpuTimes::busy`] and [`CpuTimes::total`] say),
//! as a percentage with one decimal.
//!
//! What happens at the edges, for the whole machine and for each CPU alike:
//!
//! | case | utilisation reported |
//! |---|---|
//! | first reading (no earlier one) | since boot: the counters alone |
//! | a CPU with no earlier reading (it came online since) | since its counters started, the same rule |
//! | a counter went backwards (reset, or a counter narrower than 64 bits wrapped) | the readings cannot be compared: since the counters started |
//! | no tick elapsed between the readings | 0.0 |
//! | a CPU went offline | it is not in the new reading, so not reported |
//!
//! CPUs are matched by their number (`cpuN`), not their position: when `cpu1` of four goes
//! offline, `cpu2` is still compared with `cpu2`.

use super::parse::CpuTimes;
use crate::units::round1;

/// Utilisation in % (0..=100, one decimal) from `earlier` to `now` (see the module's table
/// for a missing or incomparable `earlier`).
pub fn percent(earlier: Option<&CpuTimes>, now: &CpuTimes) -> f64 {
    let delta = earlier.and_then(|earlier| now.since(earlier)).unwrap_or(*now);
    let total = delta.total();
    if total == 0 {
        return 0.0;
    }
    // busy <= total by construction, so this is within 0..=100.
    round1(delta.busy() as f64 * 100.0 / total as f64)
}

/// Utilisation of each CPU of `now`, in its order, each against the reading of the same CPU
/// number in `earlier` (empty on the first reading).
pub fn per_core(earlier: &[(u32, CpuTimes)], now: &[(u32, CpuTimes)]) -> Vec<f64> {
    now.iter()
        .enumerate()
        .map(|(position, (id, times))| {
            // The same position is the usual case (no CPU came or went): no search.
            let previous = match earlier.get(position) {
                Some((same, previous)) if same == id => Some(previous),
                _ => earlier.iter().find(|(other, _)| other == id).map(|(_, previous)| previous),
            };
            percent(previous, times)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::parse::parse_proc_stat_cpus;
    use crate::golden::fixture;

    fn times(busy_user: u64, idle: u64) -> CpuTimes {
        CpuTimes { user: busy_user, idle, ..CpuTimes::default() }
    }

    #[test]
    fn interval_is_the_difference_of_two_readings() {
        let earlier = times(100, 900);
        let now = CpuTimes { user: 130, system: 10, iowait: 5, idle: 955, ..CpuTimes::default() };
        // 40 busy of 100 ticks: iowait counts as idle.
        assert_eq!(percent(Some(&earlier), &now), 40.0);
        assert_eq!(percent(Some(&earlier), &times(101, 902)), 33.3);
        let all_busy = CpuTimes { nice: 1, irq: 1, softirq: 1, steal: 1, ..CpuTimes::default() };
        assert_eq!(percent(Some(&CpuTimes::default()), &all_busy), 100.0, "steal, irq, softirq, nice are busy");
    }

    #[test]
    fn first_reading_covers_the_time_since_boot() {
        assert_eq!(percent(None, &times(250, 750)), 25.0);
        assert_eq!(per_core(&[], &[(0, times(1, 3)), (1, times(3, 1))]), vec![25.0, 75.0]);
    }

    #[test]
    fn no_tick_elapsed_reads_zero() {
        assert_eq!(percent(Some(&times(5, 5)), &times(5, 5)), 0.0);
        assert_eq!(percent(None, &CpuTimes::default()), 0.0);
    }

    #[test]
    fn a_counter_going_backwards_falls_back_to_the_counters_alone() {
        // A reset (or a wrapped narrow counter): the new counters are all there is to go by.
        let earlier = CpuTimes { user: u64::MAX - 5, idle: 1000, ..CpuTimes::default() };
        assert_eq!(percent(Some(&earlier), &times(10, 30)), 25.0);
        // Only one state going back is enough.
        let earlier = CpuTimes { user: 5, steal: 50, idle: 10, ..CpuTimes::default() };
        let now = CpuTimes { user: 15, steal: 0, idle: 30, ..CpuTimes::default() };
        assert_eq!(percent(Some(&earlier), &now), 33.3);
    }

    #[test]
    fn cpus_are_matched_by_number_when_one_goes_offline_or_comes_back() {
        let earlier = [(0, times(10, 90)), (1, times(50, 50)), (2, times(0, 100)), (3, times(0, 100))];
        // cpu1 went offline: cpu2 and cpu3 are still compared with themselves.
        let now = [(0, times(20, 180)), (2, times(100, 100)), (3, times(0, 200))];
        assert_eq!(per_core(&earlier, &now), vec![10.0, 100.0, 0.0]);
        // cpu1 is back: no earlier reading of it in the last cycle, so since its counters began.
        let later = [(0, times(30, 270)), (1, times(60, 60)), (2, times(100, 200)), (3, times(0, 300))];
        assert_eq!(per_core(&now, &later), vec![10.0, 50.0, 0.0, 0.0]);
    }

    #[test]
    fn captured_interval_of_this_build_machine() {
        let read = |name: &str| parse_proc_stat_cpus(&fixture("cpu", name)).expect("parses");
        let earlier = read("proc-stat--2cpu-kvm-steal-captured.txt");
        let now = read("proc-stat--2cpu-kvm-steal-1.5s-later-captured.txt");
        let total = percent(Some(&earlier.total), &now.total);
        let cores = per_core(&earlier.cores, &now.cores);
        assert_eq!(cores.len(), 2);
        // Busy and total ticks worked out by hand from the two files.
        let busy = |t: &CpuTimes| t.user + t.nice + t.system + t.irq + t.softirq + t.steal;
        let all = |t: &CpuTimes| busy(t) + t.idle + t.iowait;
        let expected =
            (busy(&now.total) - busy(&earlier.total)) as f64 * 100.0 / (all(&now.total) - all(&earlier.total)) as f64;
        assert_eq!(total, round1(expected));
        assert!(cores.iter().all(|c| (0.0..=100.0).contains(c)));
        // The machine's share is a weighted mean of the CPUs' shares.
        let (low, high) = cores.iter().fold((100.0f64, 0.0f64), |(l, h), c| (l.min(*c), h.max(*c)));
        assert!((low..=high).contains(&total), "{total} not within {cores:?}");
    }
}
