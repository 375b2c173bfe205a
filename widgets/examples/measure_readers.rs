//! Ad-hoc: CPU time per call of the old sysinfo readers and the new lean readers.
use std::time::Instant;

use fleet_widgets::{FixtureHost, Os, Timestamp, Widget};
use sysinfo::{
    DiskRefreshKind, Disks, MemoryRefreshKind, Networks, ProcessRefreshKind, ProcessesToUpdate, RefreshKind, System,
    UpdateKind, Users,
};

fn cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn measure(name: &str, iters: u32, mut f: impl FnMut()) {
    f();
    let (c0, w0) = (cpu_ns(), Instant::now());
    for _ in 0..iters {
        f();
    }
    let cpu = (cpu_ns() - c0) as f64 / iters as f64 / 1000.0;
    let wall = w0.elapsed().as_secs_f64() * 1e6 / iters as f64;
    println!("{name:40} cpu {cpu:8.1} us/call   wall {wall:8.1} us/call");
}

fn main() {
    let extra: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(0);
    let _threads: Vec<_> =
        (0..extra).map(|_| std::thread::spawn(|| std::thread::sleep(std::time::Duration::from_secs(600)))).collect();
    let n_procs = std::fs::read_dir("/proc")
        .map(|d| d.flatten().filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok()).count())
        .unwrap_or(0);
    println!("processes: {n_procs}, extra threads in this process: {extra}");
    let host = FixtureHost::new(Os::Linux);
    let iters = 500;
    // Old readers (the code before this branch).
    let mut system =
        System::new_with_specifics(RefreshKind::nothing().with_memory(MemoryRefreshKind::nothing().with_ram()))
            .unwrap();
    let users = Users::new_with_refreshed_list().ok();
    measure("processes (old: sysinfo)", iters, || {
        let refresh = ProcessRefreshKind::nothing().with_cpu().with_memory().with_user(UpdateKind::OnlyIfNotSet);
        system.refresh_processes_specifics(ProcessesToUpdate::All, true, refresh);
        system.refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram());
        std::hint::black_box((system.processes().len(), &users));
    });
    let mut w = fleet_widgets::processes::ProcessesWidget::default();
    measure("processes (new: /proc/PID/stat)", iters, || drop(w.collect(&host, Timestamp(0))));
    let mut networks = Networks::new_with_refreshed_list().unwrap();
    measure("network (old: sysinfo)", iters * 4, || networks.refresh(true));
    let mut w = fleet_widgets::network::NetworkWidget::default();
    measure("network (new: /proc/net/dev + sockets)", iters * 4, || drop(w.collect(&host, Timestamp(0))));
    let kind = DiskRefreshKind::nothing().with_storage().with_io_usage();
    let mut disks = Disks::new_with_refreshed_list_specifics(kind).unwrap();
    measure("disk (old: sysinfo)", iters * 4, || disks.refresh_specifics(true, kind));
    let mut w = fleet_widgets::disk::DiskWidget::default();
    measure("disk (new: statvfs + /proc/diskstats)", iters * 4, || drop(w.collect(&host, Timestamp(0))));
    let mut w = fleet_widgets::security::SecurityWidget;
    measure("security (Linux: constant)", iters * 4, || drop(w.collect(&host, Timestamp(0))));
}
