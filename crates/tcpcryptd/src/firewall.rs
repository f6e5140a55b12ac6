//! The daemon's own iptables/ip6tables rules.
//!
//! Outbound TCP is queued from the `raw` table's OUTPUT chain and inbound
//! TCP from the `mangle` table's INPUT chain. Both places matter for
//! conntrack, which sits between them (priority -200): it then sees wire
//! packets in both directions, as any firewall between this host and the
//! network would, and not a mix of plaintext and wire sequence numbers.
//! Forwarded traffic is never queued.
//!
//! Our rules live in our own chains (`TCPCRYPT_OUT`, `TCPCRYPT_IN`), entered
//! by one jump rule per built-in chain carrying the comment `tcpcryptd`.
//! That is how stale rules of a crashed instance are found and removed.

use std::process::Command;

use crate::config::{Config, InterfaceSet, IptablesBackend, PortSet};

pub const OUT_CHAIN: &str = "TCPCRYPT_OUT";
pub const IN_CHAIN: &str = "TCPCRYPT_IN";
const COMMENT: &str = "tcpcryptd";

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

/// Where a chain of ours hangs.
struct Hookpoint {
    table: &'static str,
    builtin: &'static str,
    chain: &'static str,
    /// `-o` for outbound, `-i` for inbound.
    iface_flag: &'static str,
}

const HOOKPOINTS: [Hookpoint; 2] = [
    Hookpoint {
        table: "raw",
        builtin: "OUTPUT",
        chain: OUT_CHAIN,
        iface_flag: "-o",
    },
    Hookpoint {
        table: "mangle",
        builtin: "INPUT",
        chain: IN_CHAIN,
        iface_flag: "-i",
    },
];

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

/// The rule bodies (after `-A CHAIN`) of one of our chains.
fn chain_rules(config: &Config, hp: &Hookpoint) -> Vec<Vec<String>> {
    let s = |x: &str| x.to_string();
    let mut rules = vec![
        vec![s(hp.iface_flag), s("lo"), s("-j"), s("RETURN")],
        vec![
            s("-m"),
            s("mark"),
            s("--mark"),
            format!("{:#x}", config.mark),
            s("-j"),
            s("RETURN"),
        ],
    ];
    let mut target = vec![
        s("-j"),
        s("NFQUEUE"),
        s("--queue-num"),
        config.queue.to_string(),
    ];
    if !config.fail_closed {
        target.push(s("--queue-bypass"));
    }
    let ifaces: Vec<Option<&str>> = match &config.interfaces {
        InterfaceSet::All => vec![None],
        InterfaceSet::Named(list) => list.iter().map(|n| Some(n.as_str())).collect(),
    };
    let port_groups: Vec<Option<String>> = match &config.ports {
        PortSet::All => vec![None],
        PortSet::Ranges(ranges) => multiport_groups(ranges).into_iter().map(Some).collect(),
    };
    for iface in &ifaces {
        for ports in &port_groups {
            let mut r = vec![s("-p"), s("tcp")];
            if let Some(i) = iface {
                r.extend([s(hp.iface_flag), s(i)]);
            }
            if let Some(p) = ports {
                r.extend([s("-m"), s("multiport"), s("--ports"), p.clone()]);
            }
            r.extend(target.iter().cloned());
            rules.push(r);
        }
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

/// Removes every rule and chain of ours, including a crashed instance's.
/// Returns how many jump rules were found.
pub fn remove_rules(backend: &Backend) -> Result<usize, FirewallError> {
    let mut found = 0;
    for cmd in backend.commands() {
        for hp in &HOOKPOINTS {
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
                let jump = jump_rule(hp);
                let mut args: Vec<&str> = vec!["-t", hp.table, "-I", hp.builtin, "1"];
                args.extend(jump.iter().map(String::as_str));
                run(cmd, &args)?;
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

    fn config(flags: &[&str]) -> Config {
        let mut v = vec!["tcpcryptd"];
        v.extend_from_slice(flags);
        Config::from_args(&Args::try_parse_from(v).expect("flags")).expect("config")
    }

    fn joined(rules: Vec<Vec<String>>) -> Vec<String> {
        rules.into_iter().map(|r| r.join(" ")).collect()
    }

    #[test]
    fn default_rules_skip_loopback_and_mark_then_queue_with_bypass() {
        let c = config(&[]);
        assert_eq!(
            joined(chain_rules(&c, &HOOKPOINTS[0])),
            vec![
                "-o lo -j RETURN".to_string(),
                "-m mark --mark 0x74637270 -j RETURN".to_string(),
                "-p tcp -j NFQUEUE --queue-num 7463 --queue-bypass".to_string(),
            ]
        );
    }

    #[test]
    fn fail_closed_rules_have_no_bypass() {
        let c = config(&["--fail-closed", "--queue", "3"]);
        let rules = joined(chain_rules(&c, &HOOKPOINTS[1]));
        assert_eq!(rules[2], "-p tcp -j NFQUEUE --queue-num 3");
        assert_eq!(rules[0], "-i lo -j RETURN");
    }

    #[test]
    fn ports_and_interfaces_make_one_rule_per_pair() {
        let c = config(&["--ports", "80,8000-8100", "--interfaces", "eth0,eth1"]);
        let rules = joined(chain_rules(&c, &HOOKPOINTS[1]));
        assert_eq!(
            &rules[2..],
            &[
                "-p tcp -i eth0 -m multiport --ports 80,8000:8100 -j NFQUEUE --queue-num 7463 --queue-bypass"
                    .to_string(),
                "-p tcp -i eth1 -m multiport --ports 80,8000:8100 -j NFQUEUE --queue-num 7463 --queue-bypass"
                    .to_string(),
            ]
        );
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
