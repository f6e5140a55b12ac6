//! `tcpcrypt-bench`: what tcpcrypt costs next to plain TCP on this machine.
//!
//! Owns: a throwaway pair of network namespaces joined by a veth link with
//! a release `tcpcryptd` in each, and the traffic between them: one bulk
//! stream each way, connection rate and time to first byte (with and
//! without session resumption), the daemons' CPU per GB and their memory
//! per idle connection, measured in alternating plain/tcpcrypt rounds and
//! reported as medians with their range, as a table and as JSON.
//!
//! Must not: judge a number (it reports, it has no thresholds), touch
//! anything outside its namespaces, or leave namespaces, daemons or rules
//! behind (the testnet guards remove them, also on Ctrl-C). Exit status:
//! 0 all measured and checked, 1 the test bed could not be set up,
//! 2 bad arguments, 3 some measurement failed or a check did not hold (the
//! table and JSON are still written), 130 interrupted.

mod bench;
mod interrupt;
mod lookups;
mod report;
mod stats;
mod testbed;
mod traffic;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use serde_json::{Value, json};

use crate::bench::Plan;
use crate::report::Results;
use crate::testbed::Testbed;

const AFTER_HELP: &str = "\
Needs root: it creates network namespaces and the daemons install firewall
rules inside them. Each round starts fresh daemons; plain runs use server
ports the daemons do not handle, on the same link, so plain and tcpcrypt runs
alternate on the same daemons. Every tcpcrypt measurement is checked to be
encrypted and every plain one to be untouched by the daemons. MB and GB are
10^6 and 10^9 bytes.

Exit status: 0 everything measured and checked; 1 the namespaces or daemons
could not be set up; 2 bad arguments; 3 a measurement failed or a check did
not hold (the table and JSON are written anyway); 130 interrupted.";

/// Benchmark tcpcrypt against plain TCP between two network namespaces.
#[derive(Parser, Debug)]
#[command(name = "tcpcrypt-bench", version, after_help = AFTER_HELP)]
struct Args {
    /// Rounds; each measures every figure once, plain and tcpcrypt
    /// alternating [default: 5; --smoke: 2]
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=100))]
    rounds: Option<u16>,
    /// Bytes per bulk stream, with an optional K, M or G suffix (powers of
    /// 1024) [default: 256M; --smoke: 4M]
    #[arg(long, value_parser = parse_size)]
    bulk_bytes: Option<u64>,
    /// Seconds per connection-rate run (each of plain, tcpcrypt, tcpcrypt
    /// without resumption; parallel and one at a time) [default: 2;
    /// --smoke: 0.3]
    #[arg(long, value_parser = parse_seconds)]
    rate_seconds: Option<f64>,
    /// Parallel clients in the connection-rate runs [default: 4; --smoke: 2]
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    clients: Option<u16>,
    /// Idle tcpcrypt connections opened to measure the daemons' memory per
    /// connection; 0 skips it [default: 2000; --smoke: 50]
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=100_000))]
    idle_connections: Option<u32>,
    /// Tiny sizes, for checking in CI that the benchmark still works; the
    /// numbers mean little
    #[arg(long)]
    smoke: bool,
    /// Where to write the JSON report
    #[arg(long, default_value = "target/bench.json")]
    json: PathBuf,
    /// The tcpcryptd binary [default: the one next to this program]
    #[arg(long)]
    daemon: Option<PathBuf>,
    /// Leave receive offload (GRO) off on the veth link. By default it is
    /// turned on, as physical NICs have it; plain TCP does not depend on it
    /// over veth, tcpcrypt does
    #[arg(long)]
    no_gro: bool,
    /// One more argument for both daemons, e.g. `--daemon-arg=--large-segments=off`
    /// to measure without large segments; repeat for several
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    daemon_arg: Vec<String>,
    /// Measure session lookups instead: their latency from --clients
    /// threads with the daemons idle, during one bulk stream of
    /// --bulk-bytes, and right after accept on new connections, each run
    /// --rate-seconds long
    #[arg(long)]
    lookups: bool,
}

fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (digits, shift) = match s.char_indices().last() {
        Some((i, 'K' | 'k')) => (&s[..i], 10),
        Some((i, 'M' | 'm')) => (&s[..i], 20),
        Some((i, 'G' | 'g')) => (&s[..i], 30),
        _ => (s, 0),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{s}` is not a size like 4096, 64K, 512M or 1G"))?;
    let bytes = n
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("`{s}` is too large"))?;
    if bytes == 0 {
        return Err("a bulk stream needs at least one byte".into());
    }
    Ok(bytes)
}

fn parse_seconds(s: &str) -> Result<f64, String> {
    let x: f64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if !(0.01..=3600.0).contains(&x) {
        return Err(format!("`{s}`: expected 0.01 to 3600 seconds"));
    }
    Ok(x)
}

impl Args {
    fn plan(&self) -> Plan {
        let smoke = self.smoke;
        let pick = |given: Option<u64>, normal: u64, tiny: u64| {
            given.unwrap_or(if smoke { tiny } else { normal })
        };
        Plan {
            rounds: pick(self.rounds.map(u64::from), 5, 2) as usize,
            bulk_bytes: pick(self.bulk_bytes, 256 << 20, 4 << 20),
            rate_seconds: self.rate_seconds.unwrap_or(if smoke { 0.3 } else { 2.0 }),
            clients: pick(self.clients.map(u64::from), 4, 2) as usize,
            idle_connections: pick(self.idle_connections.map(u64::from), 2000, 50) as usize,
        }
    }
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    if let Err(e) = interrupt::install() {
        eprintln!("tcpcrypt-bench: {e}");
        return ExitCode::from(1);
    }
    match run(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tcpcrypt-bench: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(args: &Args) -> Result<ExitCode, String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("needs root (network namespaces, firewall rules, NFQUEUE)".into());
    }
    let plan = args.plan();
    let daemon = match &args.daemon {
        Some(p) => p.clone(),
        None => next_to_self("tcpcryptd")?,
    };
    if !daemon.is_file() {
        return Err(format!(
            "no tcpcryptd at {}; build it (cargo build --release) or pass --daemon",
            daemon.display()
        ));
    }
    // Both ends of every idle connection live in this process.
    raise_fd_limit(2 * plan.idle_connections as u64 + 256)?;
    let host_before = host_info();
    if args.lookups {
        println!(
            "tcpcrypt-bench --lookups: {} threads, {} s per run, {} bulk stream",
            plan.clients,
            plan.rate_seconds,
            human_bytes(plan.bulk_bytes)
        );
        println!(
            "host: {} CPUs, load average {}",
            host_before["cpus"],
            host_before["loadavg"].as_str().unwrap_or("?")
        );
        return run_lookups(args, &plan, &daemon, host_before);
    }
    println!(
        "tcpcrypt-bench: {} rounds, {} per bulk stream, {} s per rate run, {} clients, \
         {} idle connections{}",
        plan.rounds,
        human_bytes(plan.bulk_bytes),
        plan.rate_seconds,
        plan.clients,
        plan.idle_connections,
        if args.smoke { " (smoke sizes)" } else { "" }
    );
    println!(
        "host: {} CPUs, load average {}",
        host_before["cpus"],
        host_before["loadavg"].as_str().unwrap_or("?")
    );

    let started = Instant::now();
    let mut res = Results::new(plan.rounds, plan.clients);
    let mut bed = Testbed::new(&daemon, !args.no_gro, &args.daemon_arg)?;
    let outcome = bench::run(&mut bed, &plan, &mut res);
    // Tear down before printing, so a slow cleanup is over once the table
    // appears and nothing of ours runs while the user reads it.
    drop(bed);
    let seconds = started.elapsed().as_secs_f64();

    println!(
        "\nmedian [min..max] over rounds; tcpcrypt/plain is the median of each round's ratio\n"
    );
    print!("{}", res.table());
    let host_after = host_info();
    println!(
        "took {seconds:.0} s; load average at the end {}",
        host_after["loadavg"].as_str().unwrap_or("?")
    );
    let settings = json!({
        "rounds": plan.rounds,
        "bulk_bytes": plan.bulk_bytes,
        "rate_seconds": plan.rate_seconds,
        "clients": plan.clients,
        "idle_connections": plan.idle_connections,
        "smoke": args.smoke,
        "daemon": daemon.display().to_string(),
        "gro": !args.no_gro,
        "daemon_args": args.daemon_arg,
    });
    let host = json!({"before": host_before, "after": host_after});
    write_json(&args.json, &res.json(settings, host, seconds))?;
    println!("JSON report: {}", args.json.display());
    outcome?;

    if res.interrupted {
        return Ok(ExitCode::from(130));
    }
    let failed = res.failed_checks();
    if failed > 0 || !res.problems.is_empty() {
        eprintln!(
            "tcpcrypt-bench: {failed} check(s) did not hold and {} measurement(s) failed; see above",
            res.problems.len()
        );
        return Ok(ExitCode::from(3));
    }
    Ok(ExitCode::SUCCESS)
}

/// `--lookups`: one run of each lookup measurement, no rounds.
fn run_lookups(
    args: &Args,
    plan: &Plan,
    daemon: &Path,
    host_before: Value,
) -> Result<ExitCode, String> {
    let started = Instant::now();
    let bed = Testbed::new(daemon, !args.no_gro, &args.daemon_arg)?;
    let outcome = lookups::run(&bed, plan.clients, plan.rate_seconds, plan.bulk_bytes);
    drop(bed);
    let (report, wrong) = outcome?;
    let seconds = started.elapsed().as_secs_f64();
    let host_after = host_info();
    println!(
        "took {seconds:.0} s; load average at the end {}",
        host_after["loadavg"].as_str().unwrap_or("?")
    );
    let settings = json!({
        "mode": "lookups",
        "threads": plan.clients,
        "seconds_per_run": plan.rate_seconds,
        "bulk_bytes": plan.bulk_bytes,
        "daemon": daemon.display().to_string(),
        "gro": !args.no_gro,
        "daemon_args": args.daemon_arg,
    });
    let json = json!({
        "settings": settings,
        "host": {"before": host_before, "after": host_after},
        "lookups": report,
        "seconds": seconds,
    });
    write_json(&args.json, &json)?;
    println!("JSON report: {}", args.json.display());
    if interrupt::requested() {
        return Ok(ExitCode::from(130));
    }
    if wrong > 0 {
        eprintln!("tcpcrypt-bench: {wrong} lookup(s) did not answer tcpcrypt; see above");
        return Ok(ExitCode::from(3));
    }
    Ok(ExitCode::SUCCESS)
}

fn next_to_self(name: &str) -> Result<PathBuf, String> {
    let me = std::env::current_exe().map_err(|e| format!("finding this program's path: {e}"))?;
    let dir = me
        .parent()
        .ok_or_else(|| format!("{} has no directory", me.display()))?;
    Ok(dir.join(name))
}

fn raise_fd_limit(needed: u64) -> Result<(), String> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(format!(
            "reading the open-file limit: {}",
            std::io::Error::last_os_error()
        ));
    }
    if lim.rlim_cur >= needed {
        return Ok(());
    }
    lim.rlim_cur = needed;
    lim.rlim_max = lim.rlim_max.max(needed);
    // SAFETY: setrlimit reads the struct we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(format!(
            "raising the open-file limit to {needed} for the idle connections: {}; \
             use fewer --idle-connections",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// What the numbers depend on: CPU count and model, kernel, current load.
fn host_info() -> Value {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string());
    json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu_model": model,
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
        "loadavg": read("/proc/loadavg").split_whitespace().take(3).collect::<Vec<_>>().join(" "),
    })
}

fn write_json(path: &Path, report: &Value) -> Result<(), String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    let mut text = serde_json::to_string_pretty(report)
        .map_err(|e| format!("encoding the JSON report: {e}"))?;
    text.push('\n');
    std::fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))
}

fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 && n % (1 << 30) == 0 => format!("{} GiB", n >> 30),
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{} KiB", n >> 10),
        n => format!("{n} bytes"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_suffixes_and_refuse_nonsense() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("512m"), Ok(512 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert!(parse_size("0").is_err());
        assert!(parse_size("1.5G").is_err());
        assert!(parse_size("G").is_err());
        assert!(parse_size("99999999999G").is_err());
    }

    #[test]
    fn smoke_shrinks_only_what_was_not_given() {
        let args = Args::try_parse_from(["tcpcrypt-bench", "--smoke", "--rounds", "3"])
            .expect("valid arguments");
        let plan = args.plan();
        assert_eq!(plan.rounds, 3);
        let full = Args::try_parse_from(["tcpcrypt-bench"])
            .expect("valid arguments")
            .plan();
        assert!(plan.bulk_bytes < full.bulk_bytes);
        assert!(plan.idle_connections < full.idle_connections);
        assert!(plan.rate_seconds < full.rate_seconds);
    }

    #[test]
    fn out_of_range_arguments_are_refused() {
        for bad in [
            &["tcpcrypt-bench", "--rounds", "0"][..],
            &["tcpcrypt-bench", "--rate-seconds", "-1"],
            &["tcpcrypt-bench", "--clients", "0"],
        ] {
            assert!(Args::try_parse_from(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn byte_counts_read_naturally() {
        assert_eq!(human_bytes(512 << 20), "512 MiB");
        assert_eq!(human_bytes(1 << 30), "1 GiB");
        assert_eq!(human_bytes(1000), "1000 bytes");
    }
}
