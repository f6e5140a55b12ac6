//! The daemon's own iptables/ip6tables rules.
//!
//! Outbound TCP is queued from the `raw` table's OUTPUT chain and inbound
//! TCP from the `mangle` table's INPUT chain. Both places matter for
//! conntrack, which sits between them (priority -200): it then sees wire
//! packets in both directions, as any firewall between this host and the
//! network would, and not a mix of plaintext and wire sequence numbers.
//! Forwarded traffic is never queued.
//!
//! Connections the engine guards (negotiating, encrypted or aborted) must
//! never pass without a live daemon, whatever the fail-open setting: after a
//! crash the kernel would send their plaintext. The daemon's verdict sets
//! [`SEEN_MARK`] on every packet it accepts and [`GUARD_MARK`] on those of
//! guarded connections; two chains after conntrack copy the guard bit into
//! the connection's conntrack mark and, outbound, drop a packet of a
//! guarded connection that went past the queue unseen (queue bypass with
//! no reader). Inbound, packets of guarded connections are queued without
//! bypass, so without a reader the kernel drops them.
//!
//! Our rules live in our own chains, entered by one jump rule per built-in
//! chain carrying the comment `tcpcryptd`. That is how stale rules of a
//! crashed instance are found and removed.

use std::process::Command;

use crate::config::{Config, InterfaceSet, IptablesBackend, PortSet};

pub const OUT_CHAIN: &str = "TCPCRYPT_OUT";
pub const IN_CHAIN: &str = "TCPCRYPT_IN";
pub const OUT_GUARD_CHAIN: &str = "TCPCRYPT_OUT_GUARD";
pub const IN_GUARD_CHAIN: &str = "TCPCRYPT_IN_GUARD";
const COMMENT: &str = "tcpcryptd";

/// Packet-mark bit the daemon's verdict sets on every packet it accepts:
/// "the live daemon handled this one".
pub const SEEN_MARK: u32 = 0x0100_0000;
/// Packet-mark bit the verdict sets on packets of guarded connections, and
/// the conntrack-mark bit our rules copy it to. Both bits are reserved for
/// the daemon; other bits of either mark are left as they are.
pub const GUARD_MARK: u32 = 0x0200_0000;

/// The skb mark a verdict gives a packet that arrived with `mark`: our two
/// bits say whether the packet's connection is guarded, the other bits stay.
pub fn verdict_mark(mark: u32, guarded: bool) -> u32 {
    let ours = if guarded {
        SEEN_MARK | GUARD_MARK
    } else {
        SEEN_MARK
    };
    (mark & !(SEEN_MARK | GUARD_MARK)) | ours
}

/// multiport accepts at most 15 ports per rule, a range counting as two.
const MULTIPORT_SLOTS: usize = 15;

/// A firewall command that failed.
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    #[error("running `{command}`: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("`{command}` failed: {stderr}")]
    Failed { command: String, stderr: String },
    #[error(
        "neither iptables nor iptables-legacy can list the raw table: {0} (install the `iptables` package)"
    )]
    NoBackend(String),
}

/// What a chain of ours does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// Queues packets to the daemon.
    Queue,
    /// Runs after conntrack and the daemon's verdict: records guarded
    /// connections in the conntrack mark and, outbound, drops what of them
    /// went past the queue unseen.
    Guard,
}

/// Where a chain of ours hangs.
struct Hookpoint {
    table: &'static str,
    builtin: &'static str,
    chain: &'static str,
    /// `-o` for outbound, `-i` for inbound.
    iface_flag: &'static str,
    role: Role,
}

/// In the order they are installed: the guard chains first, so that by the
/// time packets are queued a guarded connection is recorded from its first
/// verdict on. Removal goes the other way.
const HOOKPOINTS: [Hookpoint; 4] = [
    // After conntrack and after the raw-table verdict, before the packet
    // leaves.
    Hookpoint {
        table: "mangle",
        builtin: "OUTPUT",
        chain: OUT_GUARD_CHAIN,
        iface_flag: "-o",
        role: Role::Guard,
    },
    // An accepted verdict resumes at the next table, so the mark the
    // verdict set on an inbound packet is only visible from `filter` on.
    Hookpoint {
        table: "filter",
        builtin: "INPUT",
        chain: IN_GUARD_CHAIN,
        iface_flag: "-i",
        role: Role::Guard,
    },
    // Before conntrack (-300 vs -200): conntrack sees the wire packet.
    Hookpoint {
        table: "raw",
        builtin: "OUTPUT",
        chain: OUT_CHAIN,
        iface_flag: "-o",
        role: Role::Queue,
    },
    // After conntrack (-150): the connection's mark is known.
    Hookpoint {
        table: "mangle",
        builtin: "INPUT",
        chain: IN_CHAIN,
        iface_flag: "-i",
        role: Role::Queue,
    },
];

impl Hookpoint {
    fn outbound(&self) -> bool {
        self.iface_flag == "-o"
    }
}

/// The two commands (IPv4 and IPv6) of one backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    pub v4: String,
    pub v6: String,
}

impl Backend {
    /// Picks the backend: the configured one, or for `auto` the first whose
    /// IPv4 and IPv6 commands can both list the raw table.
    pub fn select(choice: IptablesBackend) -> Result<Backend, FirewallError> {
        let nft = Backend {
            v4: "iptables".into(),
            v6: "ip6tables".into(),
        };
        let legacy = Backend {
            v4: "iptables-legacy".into(),
            v6: "ip6tables-legacy".into(),
        };
        match choice {
            IptablesBackend::Nft => Ok(nft),
            IptablesBackend::Legacy => Ok(legacy),
            IptablesBackend::Auto => {
                let mut last = String::new();
                for b in [nft, legacy] {
                    let probe = b
                        .commands()
                        .try_for_each(|cmd| run(cmd, &["-t", "raw", "-S", "OUTPUT"]).map(drop));
                    match probe {
                        Ok(()) => return Ok(b),
                        Err(e) => last = e.to_string(),
                    }
                }
                Err(FirewallError::NoBackend(last))
            }
        }
    }

    fn commands(&self) -> impl Iterator<Item = &str> {
        [self.v4.as_str(), self.v6.as_str()].into_iter()
    }
}

fn run(cmd: &str, args: &[&str]) -> Result<String, FirewallError> {
    let mut full = vec!["-w"];
    full.extend_from_slice(args);
    let command = format!("{cmd} {}", full.join(" "));
    let out = Command::new(cmd)
        .args(&full)
        .output()
        .map_err(|source| FirewallError::Spawn {
            command: command.clone(),
            source,
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(FirewallError::Failed {
            command,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

fn words(list: &[&str]) -> Vec<String> {
    list.iter().map(|w| w.to_string()).collect()
}

fn mark_match(value: u32, mask: u32) -> Vec<String> {
    words(&["-m", "mark", "--mark", &format!("{value:#x}/{mask:#x}")])
}

fn connmark_match(value: u32, mask: u32) -> Vec<String> {
    words(&["-m", "connmark", "--mark", &format!("{value:#x}/{mask:#x}")])
}

/// `-p tcp` plus the interface and port matches of the configured scope,
/// one entry per rule needed to cover it.
fn scope_matches(config: &Config, hp: &Hookpoint) -> Vec<Vec<String>> {
    let ifaces: Vec<Option<&str>> = match &config.interfaces {
        InterfaceSet::All => vec![None],
        InterfaceSet::Named(list) => list.iter().map(|n| Some(n.as_str())).collect(),
    };
    let port_groups: Vec<Option<String>> = match &config.ports {
        PortSet::All => vec![None],
        PortSet::Ranges(ranges) => multiport_groups(ranges).into_iter().map(Some).collect(),
    };
    let mut out = Vec::new();
    for iface in &ifaces {
        for ports in &port_groups {
            let mut r = words(&["-p", "tcp"]);
            if let Some(i) = iface {
                r.extend(words(&[hp.iface_flag, i]));
            }
            if let Some(p) = ports {
                r.extend(words(&["-m", "multiport", "--ports", p]));
            }
            out.push(r);
        }
    }
    out
}

/// Packets conntrack could not place in a connection: they might belong to
/// a guarded one (plaintext the kernel sends after a crash is numbered in
/// its own, shorter byte space, and can fall outside what conntrack
/// tracked from the wire), so they get no connection mark to protect them.
fn unplaced() -> Vec<String> {
    words(&["-m", "conntrack", "--ctstate", "INVALID,UNTRACKED"])
}

/// The rule bodies (after `-A CHAIN`) of one of our chains.
fn chain_rules(config: &Config, hp: &Hookpoint) -> Vec<Vec<String>> {
    let mut rules = vec![
        words(&[hp.iface_flag, "lo", "-j", "RETURN"]),
        words(&[
            "-m",
            "mark",
            "--mark",
            &format!("{:#x}", config.mark),
            "-j",
            "RETURN",
        ]),
    ];
    // Several threads: the kernel picks the queue from a hash of the
    // address pair and protocol, the same both ways, so both directions of
    // a connection reach one thread. The CPU fan-out flag is not used: it
    // picks the queue by the CPU handling the packet, and a connection's
    // inbound packets are handled on other CPUs than its outbound ones.
    let target = if config.threads > 1 {
        let last = u32::from(config.queue) + u32::from(config.threads) - 1;
        [
            "--queue-balance".to_string(),
            format!("{}:{last}", config.queue),
        ]
    } else {
        ["--queue-num".to_string(), config.queue.to_string()]
    };
    let queue = |bypass: bool| {
        let mut t = words(&["-j", "NFQUEUE"]);
        t.extend(target.iter().cloned());
        if bypass {
            t.push("--queue-bypass".into());
        }
        t
    };
    let copy_guard = {
        let mut r = mark_match(GUARD_MARK, GUARD_MARK);
        r.extend(words(&[
            "-j",
            "CONNMARK",
            "--set-xmark",
            &format!("{GUARD_MARK:#x}/{GUARD_MARK:#x}"),
        ]));
        r
    };
    let bypass = !config.fail_closed;
    match (hp.role, hp.outbound()) {
        (Role::Queue, true) => {
            // Conntrack has not run yet here, so the connection mark is
            // unknown: the guard chain after it catches what bypasses.
            for scope in scope_matches(config, hp) {
                rules.push([scope, queue(bypass)].concat());
            }
        }
        (Role::Queue, false) => {
            // Only packet-too-big reports enter this chain besides TCP (see
            // `icmp_jump_rule`), loopback included: the kernel reports a
            // wire packet of ours too big for a path it already knew to
            // itself. Losing them (no daemon) is what plain TCP risks too.
            rules.insert(0, [words(&["!", "-p", "tcp"]), queue(true)].concat());
            // Guarded connections and packets conntrack cannot place reach
            // the local stack only through the daemon; without a reader the
            // kernel drops them. The scope rule below only ever matches
            // with a bypass when neither applies.
            rules.push([connmark_match(GUARD_MARK, GUARD_MARK), queue(false)].concat());
            for scope in scope_matches(config, hp) {
                if bypass {
                    rules.push([scope.clone(), unplaced(), queue(false)].concat());
                }
                rules.push([scope, queue(bypass)].concat());
            }
        }
        (Role::Guard, true) => {
            rules.push(copy_guard);
            // A reset carries no data and ends the connection: let the one
            // `ss -K` makes after a crash reach the peer.
            rules.push(words(&[
                "-p",
                "tcp",
                "--tcp-flags",
                "RST",
                "RST",
                "-j",
                "RETURN",
            ]));
            rules.push([mark_match(SEEN_MARK, SEEN_MARK), words(&["-j", "RETURN"])].concat());
            rules.push(
                [
                    connmark_match(GUARD_MARK, GUARD_MARK),
                    words(&["-j", "DROP"]),
                ]
                .concat(),
            );
            if bypass {
                for scope in scope_matches(config, hp) {
                    rules.push([scope, unplaced(), words(&["-j", "DROP"])].concat());
                }
            }
        }
        (Role::Guard, false) => rules.push(copy_guard),
    }
    rules
}

/// Splits port ranges into multiport lists of at most 15 slots each.
fn multiport_groups(ranges: &[(u16, u16)]) -> Vec<String> {
    let mut groups = Vec::new();
    let mut cur: Vec<String> = Vec::new();
    let mut slots = 0;
    for &(lo, hi) in ranges {
        let (item, cost) = if lo == hi {
            (lo.to_string(), 1)
        } else {
            (format!("{lo}:{hi}"), 2)
        };
        if slots + cost > MULTIPORT_SLOTS {
            groups.push(cur.join(","));
            cur.clear();
            slots = 0;
        }
        cur.push(item);
        slots += cost;
    }
    if !cur.is_empty() {
        groups.push(cur.join(","));
    }
    groups
}

fn jump_rule(hp: &Hookpoint) -> Vec<String> {
    [
        "-p",
        "tcp",
        "-m",
        "comment",
        "--comment",
        COMMENT,
        "-j",
        hp.chain,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The second jump into the inbound queue chain, for the path-MTU reports
/// the engine must rewrite (their MTU counts wire bytes, their quoted
/// sequence number is a wire one).
fn icmp_jump_rule(hp: &Hookpoint, v6: bool) -> Option<Vec<String>> {
    if hp.chain != IN_CHAIN {
        return None;
    }
    let report = if v6 {
        [
            "-p",
            "ipv6-icmp",
            "-m",
            "icmp6",
            "--icmpv6-type",
            "packet-too-big",
        ]
    } else {
        [
            "-p",
            "icmp",
            "-m",
            "icmp",
            "--icmp-type",
            "fragmentation-needed",
        ]
    };
    let mut r = words(&report);
    r.extend(words(&[
        "-m",
        "comment",
        "--comment",
        COMMENT,
        "-j",
        hp.chain,
    ]));
    Some(r)
}

/// Removes every rule and chain of ours, including a crashed instance's.
/// Returns how many jump rules were found.
pub fn remove_rules(backend: &Backend) -> Result<usize, FirewallError> {
    let mut found = 0;
    for cmd in backend.commands() {
        for hp in HOOKPOINTS.iter().rev() {
            let listing = run(cmd, &["-t", hp.table, "-S", hp.builtin])?;
            for line in listing.lines() {
                let words: Vec<&str> = line.split_whitespace().collect();
                let jumps_to_us = words.windows(2).any(|w| w == ["-j", hp.chain]);
                if !jumps_to_us || words.first() != Some(&"-A") {
                    continue;
                }
                let mut del = vec!["-t", hp.table, "-D"];
                del.extend(words.iter().skip(1));
                run(cmd, &del)?;
                found += 1;
            }
            let exists = run(cmd, &["-t", hp.table, "-S", hp.chain]).is_ok();
            if exists {
                run(cmd, &["-t", hp.table, "-F", hp.chain])?;
                run(cmd, &["-t", hp.table, "-X", hp.chain])?;
            }
        }
    }
    Ok(found)
}

/// Installs our chains and the jumps to them, IPv4 and IPv6. On failure
/// whatever was installed is removed again.
pub fn install_rules(backend: &Backend, config: &Config) -> Result<(), FirewallError> {
    let result = (|| {
        for cmd in backend.commands() {
            for hp in &HOOKPOINTS {
                run(cmd, &["-t", hp.table, "-N", hp.chain])?;
                for rule in chain_rules(config, hp) {
                    let mut args: Vec<&str> = vec!["-t", hp.table, "-A", hp.chain];
                    args.extend(rule.iter().map(String::as_str));
                    run(cmd, &args)?;
                }
                let v6 = cmd == backend.v6;
                for jump in std::iter::once(jump_rule(hp)).chain(icmp_jump_rule(hp, v6)) {
                    let mut args: Vec<&str> = vec!["-t", hp.table, "-I", hp.builtin, "1"];
                    args.extend(jump.iter().map(String::as_str));
                    run(cmd, &args)?;
                }
            }
        }
        Ok(())
    })();
    if result.is_err() {
        // Best effort: the original error is the one worth reporting.
        let _ = remove_rules(backend);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Args;
    use clap::Parser;

    /// One thread unless `flags` say otherwise, so the expected rules do
    /// not depend on this machine's CPU count.
    fn config(flags: &[&str]) -> Config {
        let mut v = vec!["tcpcryptd"];
        if !flags.contains(&"--threads") {
            v.extend(["--threads", "1"]);
        }
        v.extend_from_slice(flags);
        Config::from_args(&Args::try_parse_from(v).expect("flags")).expect("config")
    }

    fn joined(rules: Vec<Vec<String>>) -> Vec<String> {
        rules.into_iter().map(|r| r.join(" ")).collect()
    }

    fn hookpoint(chain: &str) -> &'static Hookpoint {
        HOOKPOINTS
            .iter()
            .find(|h| h.chain == chain)
            .expect("known chain")
    }

    #[test]
    fn default_outbound_queue_skips_loopback_and_mark_then_queues_with_bypass() {
        let c = config(&[]);
        assert_eq!(
            joined(chain_rules(&c, hookpoint(OUT_CHAIN))),
            vec![
                "-o lo -j RETURN".to_string(),
                "-m mark --mark 0x74637270 -j RETURN".to_string(),
                "-p tcp -j NFQUEUE --queue-num 7463 --queue-bypass".to_string(),
            ]
        );
    }

    #[test]
    fn inbound_queue_never_bypasses_for_guarded_or_unplaced_packets() {
        let c = config(&[]);
        assert_eq!(
            joined(chain_rules(&c, hookpoint(IN_CHAIN))),
            vec![
                "! -p tcp -j NFQUEUE --queue-num 7463 --queue-bypass".to_string(),
                "-i lo -j RETURN".to_string(),
                "-m mark --mark 0x74637270 -j RETURN".to_string(),
                "-m connmark --mark 0x2000000/0x2000000 -j NFQUEUE --queue-num 7463".to_string(),
                "-p tcp -m conntrack --ctstate INVALID,UNTRACKED -j NFQUEUE --queue-num 7463"
                    .to_string(),
                "-p tcp -j NFQUEUE --queue-num 7463 --queue-bypass".to_string(),
            ]
        );
    }

    #[test]
    fn outbound_guard_records_guarded_connections_and_drops_what_bypassed_them() {
        let c = config(&[]);
        assert_eq!(
            joined(chain_rules(&c, hookpoint(OUT_GUARD_CHAIN))),
            vec![
                "-o lo -j RETURN".to_string(),
                "-m mark --mark 0x74637270 -j RETURN".to_string(),
                "-m mark --mark 0x2000000/0x2000000 -j CONNMARK --set-xmark 0x2000000/0x2000000"
                    .to_string(),
                "-p tcp --tcp-flags RST RST -j RETURN".to_string(),
                "-m mark --mark 0x1000000/0x1000000 -j RETURN".to_string(),
                "-m connmark --mark 0x2000000/0x2000000 -j DROP".to_string(),
                "-p tcp -m conntrack --ctstate INVALID,UNTRACKED -j DROP".to_string(),
            ]
        );
    }

    #[test]
    fn inbound_guard_only_records_guarded_connections() {
        let c = config(&[]);
        assert_eq!(
            joined(chain_rules(&c, hookpoint(IN_GUARD_CHAIN))),
            vec![
                "-i lo -j RETURN".to_string(),
                "-m mark --mark 0x74637270 -j RETURN".to_string(),
                "-m mark --mark 0x2000000/0x2000000 -j CONNMARK --set-xmark 0x2000000/0x2000000"
                    .to_string(),
            ]
        );
    }

    #[test]
    fn fail_closed_rules_have_no_bypass_and_need_no_unplaced_rules() {
        let c = config(&["--fail-closed", "--queue", "3"]);
        let inbound = joined(chain_rules(&c, hookpoint(IN_CHAIN)));
        assert_eq!(inbound[1], "-i lo -j RETURN");
        assert_eq!(
            &inbound[3..],
            &[
                "-m connmark --mark 0x2000000/0x2000000 -j NFQUEUE --queue-num 3".to_string(),
                "-p tcp -j NFQUEUE --queue-num 3".to_string(),
            ]
        );
        let guard = joined(chain_rules(&c, hookpoint(OUT_GUARD_CHAIN)));
        assert_eq!(
            guard.last().map(String::as_str),
            Some("-m connmark --mark 0x2000000/0x2000000 -j DROP")
        );
        assert!(!guard.iter().any(|r| r.contains("ctstate")));
    }

    #[test]
    fn ports_and_interfaces_make_one_rule_per_pair() {
        let c = config(&["--ports", "80,8000-8100", "--interfaces", "eth0,eth1"]);
        let rules = joined(chain_rules(&c, hookpoint(OUT_CHAIN)));
        assert_eq!(
            &rules[2..],
            &[
                "-p tcp -o eth0 -m multiport --ports 80,8000:8100 -j NFQUEUE --queue-num 7463 --queue-bypass"
                    .to_string(),
                "-p tcp -o eth1 -m multiport --ports 80,8000:8100 -j NFQUEUE --queue-num 7463 --queue-bypass"
                    .to_string(),
            ]
        );
        let guard = joined(chain_rules(&c, hookpoint(OUT_GUARD_CHAIN)));
        assert_eq!(
            &guard[6..],
            &[
                "-p tcp -o eth0 -m multiport --ports 80,8000:8100 -m conntrack --ctstate INVALID,UNTRACKED -j DROP"
                    .to_string(),
                "-p tcp -o eth1 -m multiport --ports 80,8000:8100 -m conntrack --ctstate INVALID,UNTRACKED -j DROP"
                    .to_string(),
            ]
        );
    }

    #[test]
    fn several_threads_balance_over_their_queues() {
        let rules = joined(chain_rules(
            &config(&["--threads", "3", "--queue", "10"]),
            hookpoint(OUT_CHAIN),
        ));
        assert!(
            rules.contains(&"-p tcp -j NFQUEUE --queue-balance 10:12 --queue-bypass".to_string()),
            "{rules:?}"
        );
        let inbound = joined(chain_rules(
            &config(&["--threads", "3", "--queue", "10"]),
            hookpoint(IN_CHAIN),
        ));
        assert!(
            inbound.iter().all(|r| !r.contains("--queue-num")),
            "{inbound:?}"
        );
        assert!(
            inbound.iter().all(|r| !r.contains("cpu-fanout")),
            "{inbound:?}"
        );
    }

    #[test]
    fn guard_chains_are_installed_before_the_queue_chains() {
        let order: Vec<Role> = HOOKPOINTS.iter().map(|h| h.role).collect();
        assert_eq!(
            order,
            vec![Role::Guard, Role::Guard, Role::Queue, Role::Queue]
        );
    }

    #[test]
    fn verdict_mark_sets_our_bits_and_keeps_the_others() {
        assert_eq!(verdict_mark(0, false), SEEN_MARK);
        assert_eq!(verdict_mark(0, true), SEEN_MARK | GUARD_MARK);
        assert_eq!(verdict_mark(0x8000_00ff, true), 0x8300_00ff);
        // A guard bit some earlier rule set is not the daemon's word.
        assert_eq!(verdict_mark(GUARD_MARK | 0x10, false), SEEN_MARK | 0x10);
    }

    #[test]
    fn our_bits_are_not_in_the_default_injection_mark() {
        let c = config(&[]);
        assert_eq!(c.mark & (SEEN_MARK | GUARD_MARK), 0);
    }

    #[test]
    fn long_port_lists_are_split_at_fifteen_slots() {
        let ranges: Vec<(u16, u16)> = (1..=14).map(|p| (p, p)).chain([(100, 200)]).collect();
        let groups = multiport_groups(&ranges);
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[1], "100:200");
        assert_eq!(groups[0].split(',').count(), 14);
    }
}
