//! The invariants checked after every healed and drained run (issue 11).
//!
//! v2 (exactly once):
//! - every record the agent collected is stored exactly once, or counted in `dropped`, or sits
//!   in `rejected/`, and the three add up exactly (`status` counters, and independently the
//!   agent's own log of what it collected against the store);
//! - every record of a batch whose 2xx answer reached the agent is in the store exactly once;
//! - no `(machine_id, seq)` is stored twice, no record is stored twice, and every stored batch
//!   carries exactly the records the agent sealed under that seq (and the agent never sealed
//!   two different contents under one seq).
//!
//! Atlas (widget logs at least once): every widget-log entry the agent sent, or that a 2xx
//! answer acknowledged, reached the server at least once or was refused for good; none of the
//! collected widget logs is missing; the counters add up.
//!
//! Each check returns human-readable violations; an empty list is a pass.

use std::collections::{BTreeMap, BTreeSet};

use fleet_agent::spool::RecordCounts;
use fleet_wire::keys::Key32;
use serde_json::Value;

use super::proxy::{Answer, Exchange};
use super::wire::{open_batch, open_widget_logs, Batch, RecordId};

/// The `records` object of `fleet-agent status --json` (the counters contract, read by name
/// from the JSON a script would read, into the spool's own type).
pub type Counters = RecordCounts;

/// Parse `status --json` output.
pub fn parse_counters(stdout: &str) -> Result<Counters, String> {
    let value: Value = serde_json::from_str(stdout).map_err(|e| format!("not JSON ({e}): {stdout:.300}"))?;
    let records = &value["records"];
    let field = |name: &str| {
        records[name].as_u64().ok_or_else(|| format!("`records.{name}` missing or not a count in {stdout:.300}"))
    };
    Ok(Counters {
        accepted: field("accepted")?,
        delivered: field("delivered")?,
        superseded: field("superseded")?,
        dropped: field("dropped")?,
        rejected: field("rejected")?,
        backlog: field("backlog")?,
    })
}

/// One agent process's log and how it ended.
#[derive(Debug, Clone)]
pub struct Life {
    /// Its whole stderr (debug level: one `collected WIDGET` line per record).
    pub log: String,
    /// Ended by kill -9 (or died), so its last cycle may be lost by design.
    pub killed: bool,
}

/// What the agent's logs say it collected: `(records, records a kill may have lost by design)`.
///
/// A kill -9 may lose the cycle being stored (logged, not yet appended) and, while the spool
/// disk is full, every record held in memory since the spool started failing. Only records of
/// `widget` count when given.
pub fn collected(lives: &[Life], widget: Option<&str>, per_cycle: u64) -> (u64, u64) {
    let mut logged = 0;
    let mut allowed = 0;
    for life in lives {
        let mut since_ok = 0u64;
        let mut failing = false;
        for line in life.log.lines() {
            if let Some(rest) = line.split(" collected ").nth(1) {
                let name = rest.split(' ').next().unwrap_or("");
                if rest.contains("bytes of data)") && widget.is_none_or(|w| w == name) {
                    logged += 1;
                    since_ok += 1;
                }
            } else if line.contains("spool: storing ") && line.contains("holding up to") {
                failing = true;
            } else if line.contains("spool: writing again") {
                failing = false;
                since_ok = 0;
            }
        }
        if life.killed {
            allowed += if failing { since_ok } else { per_cycle };
        }
    }
    (logged, allowed)
}

/// Everything a run left behind, for the checks.
pub struct Evidence {
    /// Every request through the proxy.
    pub exchanges: Vec<Exchange>,
    /// The transport keys (empty: the run had none).
    pub keys: Vec<Key32>,
    /// Every agent process, in order (the drain run last).
    pub lives: Vec<Life>,
    /// Enabled widgets (records per cycle).
    pub per_cycle: u64,
    /// The spool's own dropped ledger.
    pub spool_dropped: u64,
    /// Unacknowledged records left in the spool after the drain.
    pub spool_backlog: u64,
    /// The batches kept in `<spool>/rejected/` (the spool's own listing): what was refused
    /// (`batch-<seq>`, `widget-logs`) and how many records each holds.
    pub rejected: Vec<(String, u64)>,
    /// `status --json`.
    pub counters: Result<Counters, String>,
}

fn is_2xx(status: Option<u16>) -> bool {
    status.is_some_and(|s| (200..300).contains(&s))
}

fn sample(ids: &[&RecordId]) -> String {
    let shown: Vec<String> = ids.iter().take(3).map(|(w, ts)| format!("{w}@{ts}")).collect();
    format!("{}{}", shown.join(", "), if ids.len() > 3 { ", …" } else { "" })
}

/// The checks for v2 against the receiver's store.
pub fn check_v2(evidence: &Evidence, stored: &[Batch]) -> Vec<String> {
    let mut violations = Vec::new();
    // What the agent sealed, per seq.
    let mut sent: BTreeMap<u64, Vec<(u64, Batch)>> = BTreeMap::new();
    for exchange in evidence.exchanges.iter().filter(|e| e.path == "/api/v2/batches") {
        let Some(body) = &exchange.body else { continue };
        match open_batch(body, &evidence.keys) {
            Ok(batch) => sent.entry(batch.seq).or_default().push((exchange.n, batch)),
            Err(e) => {
                violations.push(format!("request #{}: the agent sent a batch the test cannot open: {e}", exchange.n))
            }
        }
    }
    for (seq, versions) in &sent {
        let first = &versions[0];
        for (n, other) in versions.iter().skip(1) {
            if other.digest != first.1.digest {
                let extra: Vec<&RecordId> = other.ids.iter().filter(|id| !first.1.ids.contains(id)).collect();
                violations.push(format!(
                    "seq {seq} was sent with different contents: request #{} carried {} records, request #{n} carried {} \
                     ({} not in the first, e.g. {}); a resent seq must carry exactly its first records",
                    first.0,
                    first.1.ids.len(),
                    other.ids.len(),
                    extra.len(),
                    sample(&extra)
                ));
                break;
            }
        }
    }
    // The store: each seq once, each record once, each batch as sealed.
    let mut stored_ids: BTreeMap<&RecordId, u64> = BTreeMap::new();
    let mut stored_seqs = BTreeSet::new();
    for batch in stored {
        if !stored_seqs.insert(batch.seq) {
            violations.push(format!("seq {} is stored twice", batch.seq));
        }
        for id in &batch.ids {
            if let Some(earlier) = stored_ids.insert(id, batch.seq) {
                violations
                    .push(format!("record {}@{} is stored twice (seq {earlier} and seq {})", id.0, id.1, batch.seq));
            }
        }
        match sent.get(&batch.seq) {
            None => violations.push(format!("stored seq {} was never sent by the agent", batch.seq)),
            Some(versions) if !versions.iter().any(|(_, b)| b.digest == batch.digest) => violations.push(format!(
                "stored seq {} ({} records) differs from every body the agent sent under that seq",
                batch.seq,
                batch.ids.len()
            )),
            Some(_) => {}
        }
    }
    // Acknowledged means stored.
    let mut lost_acked = 0;
    for exchange in evidence.exchanges.iter().filter(|e| e.path == "/api/v2/batches" && is_2xx(e.relayed)) {
        let Some(batch) = exchange.body.as_ref().and_then(|b| open_batch(b, &evidence.keys).ok()) else { continue };
        let missing: Vec<&RecordId> = batch.ids.iter().filter(|id| !stored_ids.contains_key(id)).collect();
        if !missing.is_empty() {
            lost_acked += missing.len();
            violations.push(format!(
                "request #{} (seq {}, {} records) got a {} that reached the agent, but {} of its records are not in \
                 the store (e.g. {})",
                exchange.n,
                batch.seq,
                batch.ids.len(),
                exchange.relayed.unwrap_or(0),
                missing.len(),
                sample(&missing)
            ));
        }
    }
    // Rejected: each batch kept in rejected/ is `batch-<seq>`, with the records sealed under it.
    let mut rejected_ids: BTreeSet<&RecordId> = BTreeSet::new();
    for (what, records) in &evidence.rejected {
        let seq = what.strip_prefix("batch-").and_then(|s| s.parse::<u64>().ok());
        match seq.and_then(|seq| sent.get(&seq)) {
            Some(versions) => {
                let ids = &versions[0].1.ids;
                if ids.len() as u64 != *records {
                    violations.push(format!(
                        "rejected/ keeps {records} records of {what}, the agent sent {} under it",
                        ids.len()
                    ));
                }
                rejected_ids.extend(ids.iter());
            }
            None => violations.push(format!("rejected/ keeps {what}, which names no batch the agent sent")),
        }
    }
    let both: Vec<&RecordId> = rejected_ids.iter().copied().filter(|id| stored_ids.contains_key(id)).collect();
    if !both.is_empty() {
        violations.push(format!("{} records are both stored and in rejected/ (e.g. {})", both.len(), sample(&both)));
    }
    if stored.is_empty() {
        violations.push("nothing at all was stored: the run proves nothing".to_string());
    }
    let stored_count = stored_ids.len() as u64;
    let rejected_count = rejected_ids.len() as u64;
    violations.extend(check_accounting(evidence, None, stored_count, rejected_count));
    if let Ok(counters) = &evidence.counters {
        if counters.delivered != stored_count {
            violations.push(format!(
                "status says {} records delivered, the store holds {stored_count}{}",
                counters.delivered,
                if lost_acked > 0 {
                    format!(" ({lost_acked} acknowledged records are missing)")
                } else {
                    String::new()
                }
            ));
        }
        if counters.superseded != 0 {
            violations.push(format!("status says {} records superseded in a v2 run", counters.superseded));
        }
        if counters.rejected != rejected_count {
            violations.push(format!(
                "status says {} records rejected, rejected/ holds batches of {rejected_count}",
                counters.rejected
            ));
        }
    }
    violations
}

/// Batches raced to two receivers at once that a race run must reach to prove anything.
const MIN_RACES: usize = 10;

/// The race (two receivers given the same batch at the same moment, nothing else failing;
/// only copies that reached two different receivers count): both answer 2xx, one because it
/// stored the batch, the other because it found it stored (`"duplicate": true`); exactly once
/// in the store is [`check_v2`]'s. A 5xx or 409 there is a receiver that lost the race on the
/// unique `(machine_id, seq)` and did not recognize the same batch; two "stored" answers are
/// two receivers that each believe they stored it.
pub fn check_race(evidence: &Evidence) -> Vec<String> {
    let mut violations = Vec::new();
    let mut races = 0;
    let mut first_sends = 0;
    let mut seen = BTreeSet::new();
    for exchange in evidence.exchanges.iter().filter(|e| e.path == "/api/v2/batches") {
        let seq = exchange.body.as_ref().and_then(|body| open_batch(body, &evidence.keys).ok()).map(|b| b.seq);
        let first_send = seq.is_some_and(|seq| seen.insert(seq));
        let [Some(a), Some(b)] = exchange.upstream[..] else { continue };
        if exchange.servers.len() != 2 || exchange.servers[0] == exchange.servers[1] {
            continue;
        }
        races += 1;
        let seq = seq.map_or("?".to_string(), |s| s.to_string());
        if !is_2xx(Some(a.status)) || !is_2xx(Some(b.status)) {
            violations.push(format!(
                "request #{} (seq {seq}) went to both receivers at once; they answered {} and {}: the one that lost \
                 the race must find the same batch stored and answer 2xx",
                exchange.n, a.status, b.status
            ));
        } else if first_send {
            first_sends += 1;
            if a.duplicate == b.duplicate {
                violations.push(format!(
                    "request #{} (seq {seq}, its first send) went to both receivers at once and {} of them said it \
                     stored it: exactly one must store it, the other find it stored",
                    exchange.n,
                    if a.duplicate { "neither" } else { "both" }
                ));
            }
        }
    }
    if first_sends < MIN_RACES {
        violations.push(format!(
            "only {first_sends} new batches reached both receivers at once ({races} races in all; at least \
             {MIN_RACES} needed): the race run proves nothing"
        ));
    }
    violations
}

/// The checks for Atlas widget logs against the stand-in's capture (`id -> times received`).
pub fn check_atlas(evidence: &Evidence, captured: &BTreeMap<RecordId, usize>) -> Vec<String> {
    let mut violations = Vec::new();
    let mut sent: BTreeSet<RecordId> = BTreeSet::new();
    let mut rejected: BTreeSet<RecordId> = BTreeSet::new();
    for exchange in evidence.exchanges.iter().filter(|e| e.path == "/api/fleet/widget-logs") {
        let Some(body) = &exchange.body else { continue };
        let ids = match open_widget_logs(body, &evidence.keys) {
            Ok(ids) => ids,
            Err(e) => {
                violations.push(format!("request #{}: widget logs the test cannot open: {e}", exchange.n));
                continue;
            }
        };
        if is_2xx(exchange.relayed) {
            let missing: Vec<&RecordId> = ids.iter().filter(|id| !captured.contains_key(id)).collect();
            if !missing.is_empty() {
                violations.push(format!(
                    "request #{}: a 2xx reached the agent but {} of its {} widget logs never reached the server (e.g. {})",
                    exchange.n,
                    missing.len(),
                    ids.len(),
                    sample(&missing)
                ));
            }
        }
        if exchange.relayed == Some(400) {
            rejected.extend(ids.iter().cloned());
        }
        sent.extend(ids);
    }
    if captured.is_empty() {
        violations.push("no widget log reached the server at all: the run proves nothing".to_string());
    }
    let unsent: Vec<&RecordId> = captured.keys().filter(|id| !sent.contains(*id)).collect();
    if !unsent.is_empty() {
        violations.push(format!(
            "{} captured widget logs were never sent by the agent (e.g. {})",
            unsent.len(),
            sample(&unsent)
        ));
    }
    let lost: Vec<&RecordId> =
        sent.iter().filter(|id| !captured.contains_key(*id) && !rejected.contains(*id)).collect();
    if !lost.is_empty() {
        violations.push(format!(
            "{} widget logs the agent sent never reached the server and were not refused (e.g. {})",
            lost.len(),
            sample(&lost)
        ));
    }
    let rejected_only = rejected.iter().filter(|id| !captured.contains_key(*id)).count() as u64;
    // Only widget logs are sent one by one (metric records are superseded by the report), and
    // each acknowledged one reached the server (checked above): at most the distinct ones.
    if let Ok(c) = &evidence.counters {
        if c.delivered > captured.len() as u64 {
            violations.push(format!(
                "status says {} records delivered, the server holds {} distinct widget logs",
                c.delivered,
                captured.len()
            ));
        }
    }
    violations.extend(check_accounting(evidence, Some("ping"), captured.len() as u64, rejected_only));
    violations
}

/// Collected (agent logs) against kept (stored, rejected, dropped), and the counters contract.
fn check_accounting(evidence: &Evidence, widget: Option<&str>, stored: u64, rejected: u64) -> Vec<String> {
    let mut violations = Vec::new();
    let (logged, allowed) = collected(&evidence.lives, widget, if widget.is_some() { 1 } else { evidence.per_cycle });
    let what = widget.map_or("records".to_string(), |w| format!("{w} records"));
    if logged == 0 {
        violations.push(format!(
            "the agent logs hold no `collected` line for {what}: the log format changed and this check cannot count"
        ));
    }
    let kept = stored + rejected + evidence.spool_dropped;
    if kept + allowed < logged {
        violations.push(format!(
            "the agent logged {logged} collected {what}; {stored} are stored, {rejected} rejected, {} dropped: {} \
             are missing beyond the {allowed} that kill -9 may take before they are spooled",
            evidence.spool_dropped,
            logged - allowed - kept
        ));
    }
    if evidence.spool_backlog > 0 {
        violations
            .push(format!("{} records still unacknowledged in the spool after the drain", evidence.spool_backlog));
    }
    match &evidence.counters {
        Err(e) => violations.push(format!("status --json: {e}")),
        Ok(c) => {
            if c.accepted != c.delivered + c.superseded + c.dropped + c.rejected + c.backlog {
                violations.push(format!(
                    "status counters do not add up: accepted {} != delivered {} + superseded {} + dropped {} + rejected {} \
                     + backlog {}",
                    c.accepted, c.delivered, c.superseded, c.dropped, c.rejected, c.backlog
                ));
            }
            if c.backlog != 0 {
                violations.push(format!("status reports a backlog of {} after the drain", c.backlog));
            }
            if c.dropped < evidence.spool_dropped {
                violations
                    .push(format!("status says {} dropped, the spool's ledger {}", c.dropped, evidence.spool_dropped));
            }
            // What enters the spool: every record (v2), or only the widget logs (Atlas keeps
            // metrics in memory for its report and never spools them).
            let (all, all_allowed) = (logged, allowed);
            if c.accepted > all || c.accepted + all_allowed < all {
                violations.push(format!(
                    "status says {} records accepted, the agent logged {all} collected (of which kill -9 may take \
                     {all_allowed} before they are spooled)",
                    c.accepted
                ));
            }
        }
    }
    violations
}

mod self_test {
    //! The oracle on hand-made evidence: each defect class it exists for makes it fail, and a
    //! clean run passes.

    use super::*;
    use crate::fault::schedule::Fate;
    use fleet_widgets::{Level, SampleKind};
    use fleet_wire::record::{BatchBody, Dropped, Record};

    fn record(ts: u32, widget: &str) -> Record {
        Record {
            ts: format!("2026-12-01T00:00:{:02}.{:03}Z", ts / 1000, ts % 1000),
            widget: widget.into(),
            kind: SampleKind::Metric,
            level: Level::Info,
            message: String::new(),
            data: serde_json::json!({ "n": ts }),
        }
    }

    /// A plaintext v2 body of `seq` with one `cpu` record per ts.
    fn body(seq: u64, ts: &[u32]) -> Vec<u8> {
        let records = ts.iter().map(|&t| record(t, "cpu")).collect();
        let batch =
            BatchBody { machine_id: "m".into(), seq, sent_at: "x".into(), records, dropped: Dropped::default() };
        serde_json::to_vec(&batch).expect("json")
    }

    fn exchange(n: u64, body: Vec<u8>, relayed: Option<u16>) -> Exchange {
        Exchange {
            n,
            path: "/api/v2/batches".into(),
            fate: Fate::Pass,
            body: Some(body),
            upstream: vec![],
            servers: vec![],
            relayed,
        }
    }

    fn stored(seq: u64, ts: &[u32]) -> Batch {
        open_batch(&body(seq, ts), &[]).expect("opens")
    }

    fn life(records: usize) -> Life {
        Life { log: "DEBUG run: collected cpu (10 bytes of data)\n".repeat(records), killed: false }
    }

    fn evidence(exchanges: Vec<Exchange>, collected: usize, counters: Counters) -> Evidence {
        Evidence {
            exchanges,
            keys: vec![],
            lives: vec![life(collected)],
            per_cycle: 1,
            spool_dropped: 0,
            spool_backlog: 0,
            rejected: vec![],
            counters: Ok(counters),
        }
    }

    fn counters(accepted: u64, delivered: u64) -> Counters {
        Counters { accepted, delivered, superseded: 0, dropped: accepted - delivered, rejected: 0, backlog: 0 }
    }

    #[test]
    fn a_clean_run_passes() {
        // Seq 1 sent twice (answer lost, then duplicate), seq 2 once.
        let e = evidence(
            vec![
                exchange(0, body(1, &[1, 2]), None),
                exchange(1, body(1, &[1, 2]), Some(200)),
                exchange(2, body(2, &[3]), Some(200)),
            ],
            3,
            counters(3, 3),
        );
        assert_eq!(check_v2(&e, &[stored(1, &[1, 2]), stored(2, &[3])]), Vec::<String>::new());
    }

    #[test]
    fn defect_1_a_grown_resend_acked_as_duplicate_is_caught() {
        // Seq 1 stored with 1 record, its answer lost; resent with 3 records; "duplicate" 200.
        let e = evidence(
            vec![exchange(0, body(1, &[1]), None), exchange(1, body(1, &[1, 2, 3]), Some(200))],
            3,
            counters(3, 3),
        );
        let v = check_v2(&e, &[stored(1, &[1])]).join("\n");
        assert!(v.contains("seq 1 was sent with different contents"), "{v}");
        assert!(v.contains("2 of its records are not in the store"), "{v}");
        assert!(v.contains("status says 3 records delivered, the store holds 1"), "{v}");
        assert!(v.contains("2 are missing"), "{v}");
    }

    #[test]
    fn a_seq_or_record_stored_twice_and_a_batch_not_as_sealed_are_caught() {
        let e = evidence(vec![exchange(0, body(1, &[1]), Some(200))], 1, counters(1, 1));
        let v = check_v2(&e, &[stored(1, &[1]), stored(1, &[1]), stored(2, &[9])]).join("\n");
        assert!(v.contains("seq 1 is stored twice"), "{v}");
        assert!(v.contains("is stored twice (seq 1 and seq 1)"), "{v}");
        assert!(v.contains("stored seq 2 was never sent"), "{v}");
        let e = evidence(vec![exchange(0, body(1, &[1, 2]), None)], 2, counters(2, 1));
        let v = check_v2(&e, &[stored(1, &[1])]).join("\n");
        assert!(v.contains("differs from every body the agent sent under that seq"), "{v}");
    }

    #[test]
    fn counters_that_do_not_add_up_and_a_silent_loss_are_caught() {
        let e = evidence(
            vec![exchange(0, body(1, &[1]), Some(200))],
            4,
            Counters { accepted: 5, delivered: 1, superseded: 0, dropped: 0, rejected: 0, backlog: 2 },
        );
        let v = check_v2(&e, &[stored(1, &[1])]).join("\n");
        assert!(v.contains("do not add up"), "{v}");
        assert!(v.contains("backlog of 2"), "{v}");
        assert!(v.contains("3 are missing beyond the 0"), "{v}");
    }

    #[test]
    fn a_receiver_that_loses_the_race_with_an_error_is_caught() {
        let answer = |status: u16, duplicate: bool| Some(Answer { status, duplicate });
        let raced = |n: u64, seq: u64, answers: [Option<Answer>; 2]| Exchange {
            fate: Fate::Duplicate { concurrent: true },
            upstream: answers.to_vec(),
            servers: vec![0, 1],
            ..exchange(n, body(seq, &[n as u32]), Some(200))
        };
        let stored_once = [answer(200, false), answer(200, true)];
        let clean: Vec<Exchange> = (0..MIN_RACES as u64).map(|n| raced(n, n + 1, stored_once)).collect();
        assert_eq!(check_race(&evidence(clean.clone(), 0, counters(0, 0))), Vec::<String>::new());
        let with = |extra: Exchange| {
            let mut exchanges = clean.clone();
            exchanges.push(extra);
            check_race(&evidence(exchanges, 0, counters(0, 0))).join("\n")
        };
        let v = with(raced(99, 100, [answer(200, false), answer(500, false)]));
        assert!(v.contains("request #99 (seq 100) went to both receivers at once; they answered 200 and 500"), "{v}");
        let v = with(raced(99, 100, [answer(200, false), answer(200, false)]));
        assert!(v.contains("request #99 (seq 100, its first send) went to both receivers at once and both"), "{v}");
        // A resend of a stored seq: both find it stored, which is right.
        assert_eq!(with(raced(99, 1, [answer(200, true), answer(200, true)])), "");
        let v = check_race(&evidence(clean[..3].to_vec(), 0, counters(0, 0))).join("\n");
        assert!(v.contains("only 3 new batches reached both receivers at once"), "{v}");
    }

    #[test]
    fn a_kill_excuses_only_its_last_cycle_and_what_a_full_disk_held() {
        let killed = |log: &str| Life { log: log.to_string(), killed: true };
        let line = "DEBUG run: collected cpu (1 bytes of data)\n";
        assert_eq!(collected(&[killed(&line.repeat(5))], None, 3), (5, 3));
        let full = format!(
            "{}ERROR run: spool: storing 1 records: no space; holding up to 10000 in memory\n{}",
            line.repeat(4),
            line.repeat(6)
        );
        assert_eq!(collected(&[killed(&full)], None, 3), (10, 10));
        let recovered = format!("{full}INFO  run: spool: writing again (7 held records stored)\n{}", line.repeat(2));
        assert_eq!(collected(&[killed(&recovered)], None, 3), (12, 3));
        assert_eq!(collected(&[Life { log: recovered, killed: false }], None, 3), (12, 0));
    }
}
