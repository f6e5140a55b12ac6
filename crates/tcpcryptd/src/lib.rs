//! tcpcryptd: the daemon that puts tcpcrypt (RFC 8547/8548) on the TCP
//! connections of a Linux host.
//!
//! This crate owns the I/O around the sans-IO engine: NFQUEUE over netlink,
//! packet injection through raw sockets, the firewall rules that queue
//! packets to us, the control socket server, configuration, logging, the
//! key log, the journal of encrypted connections, threads and signals. It
//! must not contain protocol logic: every decision about a packet is the
//! engine's (`tcpcrypt-engine`), and every control request and answer is
//! read and written by `tcpcrypt-control`.
//!
//! The library target exists so integration tests can drive the I/O pieces
//! directly; the program is `src/main.rs`.

pub mod config;
pub mod conn_journal;
pub mod control_protocol;
pub mod control_server;
pub mod daemon;
pub mod engine_adapter;
pub mod engine_api;
pub mod firewall;
pub mod inject;
pub mod keylog;
pub mod logging;
pub mod nfqueue;
pub mod outcome_table;
pub mod outcomes;
pub mod packet_loop;
pub mod session_table;
pub mod stats_report;
pub mod sys;
pub mod trim;
