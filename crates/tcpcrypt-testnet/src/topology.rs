//! Client and server namespaces joined by veth pairs, optionally through a
//! router namespace.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::{Daemon, DaemonOptions, Netns, Result};

/// Addresses of one host inside a topology.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Addrs {
    pub v4: Ipv4Addr,
    pub v6: Ipv6Addr,
}

impl Addrs {
    pub fn ip(&self, v6: bool) -> IpAddr {
        if v6 {
            IpAddr::V6(self.v6)
        } else {
            IpAddr::V4(self.v4)
        }
    }
}

/// Client and server (and maybe a router). Interface names are the same in
/// every topology because they live inside their own namespaces: the
/// client's and server's link is `veth0`.
pub struct Topology {
    pub client: Netns,
    pub server: Netns,
    pub router: Option<Netns>,
    pub client_addrs: Addrs,
    pub server_addrs: Addrs,
}

/// The name of the client's and server's link inside their namespaces.
pub const LINK: &str = "veth0";

fn link(a: &Netns, a_if: &str, b: &Netns, b_if: &str) -> Result<()> {
    a.exec(
        "ip",
        &[
            "link",
            "add",
            a_if,
            "type",
            "veth",
            "peer",
            "name",
            b_if,
            "netns",
            b.name(),
        ],
    )?;
    a.exec("ip", &["link", "set", a_if, "up"])?;
    b.exec("ip", &["link", "set", b_if, "up"])?;
    Ok(())
}

fn addr(ns: &Netns, iface: &str, cidr: &str) -> Result<()> {
    let mut args = vec!["addr", "add", cidr, "dev", iface];
    if cidr.contains(':') {
        // Skip duplicate address detection so the address works at once.
        args.push("nodad");
    }
    ns.exec("ip", &args).map(drop)
}

impl Topology {
    /// Turns on receive offload (GRO) on the client's and server's links,
    /// as physical NICs have it by default: in-order segments arriving
    /// together reach the stack, and the daemons' queues, merged. A veth
    /// pair has it off, and without it each wire segment a daemon rewrote
    /// (which the sending kernel then cut at its MSS) arrives alone.
    /// Plain TCP is not affected on veth: its large segments cross whole.
    pub fn enable_gro(&self) -> Result<()> {
        for ns in [&self.client, &self.server] {
            ns.exec("ethtool", &["-K", LINK, "gro", "on"])?;
        }
        Ok(())
    }

    /// Client 10.77.0.1 / fd00:77::1 and server 10.77.0.2 / fd00:77::2 on
    /// one veth pair.
    pub fn pair() -> Result<Topology> {
        let client = Netns::new("c")?;
        let server = Netns::new("s")?;
        link(&client, LINK, &server, LINK)?;
        addr(&client, LINK, "10.77.0.1/24")?;
        addr(&server, LINK, "10.77.0.2/24")?;
        addr(&client, LINK, "fd00:77::1/64")?;
        addr(&server, LINK, "fd00:77::2/64")?;
        Ok(Topology {
            client,
            server,
            router: None,
            client_addrs: Addrs {
                v4: Ipv4Addr::new(10, 77, 0, 1),
                v6: Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 1),
            },
            server_addrs: Addrs {
                v4: Ipv4Addr::new(10, 77, 0, 2),
                v6: Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 2),
            },
        })
    }

    /// Client 10.77.1.1 — router — server 10.77.2.2 (fd00:77:1::1 and
    /// fd00:77:2::2), the router forwarding between its two links `veth0`
    /// (client side) and `veth1` (server side).
    pub fn routed() -> Result<Topology> {
        let client = Netns::new("c")?;
        let router = Netns::new("r")?;
        let server = Netns::new("s")?;
        link(&client, LINK, &router, "veth0")?;
        link(&server, LINK, &router, "veth1")?;
        addr(&client, LINK, "10.77.1.1/24")?;
        addr(&client, LINK, "fd00:77:1::1/64")?;
        addr(&router, "veth0", "10.77.1.254/24")?;
        addr(&router, "veth0", "fd00:77:1::fe/64")?;
        addr(&router, "veth1", "10.77.2.254/24")?;
        addr(&router, "veth1", "fd00:77:2::fe/64")?;
        addr(&server, LINK, "10.77.2.2/24")?;
        addr(&server, LINK, "fd00:77:2::2/64")?;
        router.sysctl("net.ipv4.ip_forward", "1")?;
        router.sysctl("net.ipv6.conf.all.forwarding", "1")?;
        client.exec("ip", &["route", "add", "default", "via", "10.77.1.254"])?;
        client.exec(
            "ip",
            &["-6", "route", "add", "default", "via", "fd00:77:1::fe"],
        )?;
        server.exec("ip", &["route", "add", "default", "via", "10.77.2.254"])?;
        server.exec(
            "ip",
            &["-6", "route", "add", "default", "via", "fd00:77:2::fe"],
        )?;
        Ok(Topology {
            client,
            server,
            router: Some(router),
            client_addrs: Addrs {
                v4: Ipv4Addr::new(10, 77, 1, 1),
                v6: Ipv6Addr::new(0xfd00, 0x77, 1, 0, 0, 0, 0, 1),
            },
            server_addrs: Addrs {
                v4: Ipv4Addr::new(10, 77, 2, 2),
                v6: Ipv6Addr::new(0xfd00, 0x77, 2, 0, 0, 0, 0, 2),
            },
        })
    }
}

impl Topology {
    /// Starts a daemon on the client and one on the server with the same
    /// options; returns (client's, server's).
    pub fn start_daemons(&self, opts: &DaemonOptions) -> Result<(Daemon, Daemon)> {
        let client = Daemon::start(&self.client, opts)?;
        let server = Daemon::start(&self.server, opts)?;
        Ok((client, server))
    }
}
