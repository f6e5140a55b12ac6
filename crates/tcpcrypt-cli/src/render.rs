//! How answers look: text for people, JSON (with the control protocol's
//! field names) for scripts.

use std::io::{self, Write};
use std::net::SocketAddr;

use tcpcrypt::{Connection, Lookup, format_addr};
use tcpcrypt_control::answer::{connection_object, lookup_object};

/// The `lookup` answer's fields behind the connection's addresses, as the
/// control crate writes them.
pub fn lookup_json(local: SocketAddr, remote: SocketAddr, lookup: &Lookup) -> String {
    lookup_object(local, remote, lookup)
}

/// `{"connections":[...]}`, each entry a `list` answer's entry.
pub fn connections_json(connections: &[&Connection]) -> String {
    let entries: Vec<String> = connections.iter().map(|c| connection_object(c)).collect();
    format!("{{\"connections\":[{}]}}", entries.join(","))
}

pub fn write_json_line(out: &mut impl Write, json: &str) -> io::Result<()> {
    out.write_all(json.as_bytes())?;
    out.write_all(b"\n")?;
    out.flush()
}

/// One connection in full, one `name: value` line per field.
pub fn write_lookup(
    out: &mut impl Write,
    local: SocketAddr,
    remote: SocketAddr,
    lookup: &Lookup,
) -> io::Result<()> {
    writeln!(out, "local:           {}", format_addr(local))?;
    writeln!(out, "remote:          {}", format_addr(remote))?;
    match lookup {
        Lookup::Tcpcrypt(s) => {
            writeln!(out, "state:           tcpcrypt (encrypted)")?;
            writeln!(out, "session id:      {}", s.session_id)?;
            writeln!(out, "role:            {}", s.role)?;
            writeln!(out, "tep:             {} (0x{:02x})", s.tep, s.tep.byte())?;
            writeln!(out, "aead:            {} (0x{:04x})", s.aead, s.aead.id())?;
            writeln!(out, "resumed:         {}", yes_no(s.resumed))?;
            writeln!(out, "peer app-aware:  {}", yes_no(s.peer_app_aware))?;
        }
        Lookup::Plain { reason } => {
            writeln!(out, "state:           plain (not encrypted)")?;
            writeln!(out, "reason:          {reason}")?;
        }
        Lookup::Pending => writeln!(out, "state:           pending (handshake not finished)")?,
        Lookup::Unknown => writeln!(
            out,
            "state:           unknown (tcpcryptd does not track it)"
        )?,
    }
    out.flush()
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

const COLUMNS: [&str; 11] = [
    "LOCAL", "REMOTE", "STATE", "PHASE", "ROLE", "TEP", "AEAD", "RESUMED", "SESSION", "SENT",
    "RECEIVED",
];

/// Bytes of the session ID shown in the table: enough to tell sessions
/// apart by eye, short enough for one line.
const SHORT_ID_BYTES: usize = 8;

fn row(c: &Connection) -> [String; 11] {
    let (role, tep, aead, resumed, id) = match &c.lookup {
        Lookup::Tcpcrypt(s) => (
            s.role.name().to_string(),
            s.tep.short_name().to_string(),
            s.aead.short_name().to_string(),
            yes_no(s.resumed).to_string(),
            s.session_id.short_hex(SHORT_ID_BYTES),
        ),
        _ => Default::default(),
    };
    let dash = |s: String| if s.is_empty() { "-".to_string() } else { s };
    [
        format_addr(c.local),
        format_addr(c.remote),
        c.lookup.state_name().to_string(),
        c.phase.name().to_string(),
        dash(role),
        dash(tep),
        dash(aead),
        dash(resumed),
        dash(id),
        c.bytes_sent.to_string(),
        c.bytes_received.to_string(),
    ]
}

/// An aligned table with a header line; every row is printed.
pub fn write_table(out: &mut impl Write, connections: &[&Connection]) -> io::Result<()> {
    let rows: Vec<[String; 11]> = connections.iter().map(|c| row(c)).collect();
    let mut widths = COLUMNS.map(str::len);
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.len());
        }
    }
    let header = COLUMNS.map(str::to_string);
    for r in std::iter::once(&header).chain(&rows) {
        let mut line = String::with_capacity(160);
        for (i, (cell, w)) in r.iter().zip(widths).enumerate() {
            let last = i == COLUMNS.len() - 1;
            // Byte counts align right, like numbers in any table.
            if i >= COLUMNS.len() - 2 {
                line.push_str(&format!("{cell:>w$}"));
            } else {
                line.push_str(&format!("{cell:<w$}"));
            }
            if !last {
                line.push_str("  ");
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tcpcrypt::{Aead, Phase, Role, Session, Tep};

    fn encrypted(local: &str, sent: u64) -> Connection {
        Connection {
            local: local.parse().expect("literal"),
            remote: "10.0.0.1:40312".parse().expect("literal"),
            lookup: Lookup::Tcpcrypt(Session {
                session_id: "2360583ca04231aa3be00fb3d3e878f7f5a8e610875816bebcb7cecca7780e386f"
                    .parse()
                    .expect("id"),
                role: Role::B,
                tep: Tep::EcdheCurve25519,
                aead: Aead::Aes128Gcm,
                resumed: false,
                peer_app_aware: false,
            }),
            phase: Phase::Established,
            bytes_sent: sent,
            bytes_received: 5678,
            age: Duration::from_millis(8123),
        }
    }

    #[test]
    fn table_columns_line_up() {
        let a = encrypted("10.0.0.2:80", 1);
        let b = encrypted("[fd00::1234:5678]:443", 1_234_567);
        let mut out = Vec::new();
        write_table(&mut out, &[&a, &b]).expect("write");
        let text = String::from_utf8(out).expect("utf-8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        let col = |line: &str| line.find("10.0.0.1:40312");
        assert_eq!(col(lines[1]), col(lines[2]));
        assert_eq!(lines[0].find("REMOTE"), col(lines[1]));
        assert!(lines[1].contains("2360583ca04231aa "));
        assert!(lines[2].ends_with("1234567      5678"));
    }

    #[test]
    fn json_uses_the_protocol_field_names() {
        let c = encrypted("10.0.0.2:80", 1234);
        let v: serde_json::Value =
            serde_json::from_str(&connections_json(&[&c])).expect("valid JSON");
        let row = &v["connections"][0];
        assert_eq!(row["local"], "10.0.0.2:80");
        assert_eq!(row["state"], "tcpcrypt");
        assert_eq!(row["tep_byte"], 0x23);
        assert_eq!(row["bytes_sent"], 1234);
        assert_eq!(row["age_ms"], 8123);
        assert_eq!(row["phase"], "established");
        assert_eq!(v.as_object().map(|o| o.len()), Some(1));
    }

    #[test]
    fn lookup_json_is_the_answer_behind_the_addresses() {
        let c = encrypted("10.0.0.2:80", 1);
        let v: serde_json::Value =
            serde_json::from_str(&lookup_json(c.local, c.remote, &c.lookup)).expect("valid JSON");
        assert_eq!(v["remote"], "10.0.0.1:40312");
        assert_eq!(v["role"], "B");
        assert!(v.get("phase").is_none() && v.get("v").is_none());
    }
}
