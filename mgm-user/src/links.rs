//! Link changes as the kernel announces them (RTNLGRP_LINK, and RTNLGRP_IPV4_IFADDR for
//! addresses). Every copy's source MAC and the MTU the data plane checks a copy against come
//! from the interface settings in the maps; a MAC or MTU the operator changes later must reach
//! them too. Interfaces that appear, vanish or are renamed, and addresses that come and go, are
//! how the daemon manages interfaces that come and go (spec §10) and tells IGMP their subnets.

use anyhow::Context;
use futures::{channel::mpsc::UnboundedReceiver, StreamExt};
use rtnetlink::{
    packet_core::{NetlinkMessage, NetlinkPayload},
    packet_route::{
        link::{LinkAttribute, LinkMessage},
        RouteNetlinkMessage,
    },
    sys::SocketAddr,
    MulticastGroup,
};

/// What the kernel announced of one interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// New or changed.
    Changed(LinkChange),
    /// Deleted (or moved to another namespace): the ifindex.
    Removed(u32),
    /// An IPv4 address was added to or removed from the interface with this ifindex.
    Address(u32),
}

/// An interface's current name, MAC and MTU, where the announcement carried them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkChange {
    pub ifindex: u32,
    pub name: Option<String>,
    pub mac: Option<[u8; 6]>,
    pub mtu: Option<u32>,
}

/// Subscribed to link changes. Start it before reading the interfaces, so no change falls
/// between the read and the subscription.
pub struct LinkWatch {
    messages: UnboundedReceiver<(NetlinkMessage<RouteNetlinkMessage>, SocketAddr)>,
    task: tokio::task::JoinHandle<()>,
}

impl LinkWatch {
    /// Subscribes to link changes and IPv4 address changes.
    ///
    /// # Errors
    /// The netlink socket cannot be opened or bound to the group.
    pub fn start() -> anyhow::Result<LinkWatch> {
        let (conn, _, messages) = rtnetlink::new_multicast_connection(&[
            MulticastGroup::Link,
            MulticastGroup::Ipv4Ifaddr,
        ])
        .context("cannot subscribe to link changes")?;
        Ok(LinkWatch {
            messages,
            task: tokio::spawn(conn),
        })
    }

    /// The next announcement; `None` if the socket closed.
    pub async fn next(&mut self) -> Option<LinkEvent> {
        loop {
            let (msg, _) = self.messages.next().await?;
            match msg.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(m)) => {
                    return Some(LinkEvent::Changed(to_change(&m)))
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(m)) => {
                    return Some(LinkEvent::Removed(m.header.index))
                }
                NetlinkPayload::InnerMessage(
                    RouteNetlinkMessage::NewAddress(m) | RouteNetlinkMessage::DelAddress(m),
                ) => return Some(LinkEvent::Address(m.header.index)),
                _ => {}
            }
        }
    }
}

impl Drop for LinkWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An address that is not six bytes long is not an Ethernet MAC: left out.
fn to_change(m: &LinkMessage) -> LinkChange {
    let mut change = LinkChange {
        ifindex: m.header.index,
        name: None,
        mac: None,
        mtu: None,
    };
    for a in &m.attributes {
        match a {
            LinkAttribute::Address(bytes) => change.mac = <[u8; 6]>::try_from(&bytes[..]).ok(),
            LinkAttribute::Mtu(mtu) => change.mtu = Some(*mtu),
            LinkAttribute::IfName(name) => change.name = Some(name.clone()),
            _ => {}
        }
    }
    change
}

#[cfg(test)]
mod tests {
    use rtnetlink::packet_route::link::LinkHeader;

    use super::*;

    fn message(attributes: Vec<LinkAttribute>) -> LinkMessage {
        let mut m = LinkMessage::default();
        m.header = LinkHeader {
            index: 7,
            ..LinkHeader::default()
        };
        m.attributes = attributes;
        m
    }

    #[test]
    fn mac_and_mtu_are_read_and_a_non_ethernet_address_is_left_out() {
        let mac = [2, 0, 0, 0, 0, 9];
        let m = message(vec![
            LinkAttribute::Mtu(1400),
            LinkAttribute::Address(mac.to_vec()),
            LinkAttribute::IfName("dn1".into()),
        ]);
        assert_eq!(
            to_change(&m),
            LinkChange {
                ifindex: 7,
                name: Some("dn1".into()),
                mac: Some(mac),
                mtu: Some(1400)
            }
        );
        let tunnel = message(vec![LinkAttribute::Address(vec![10, 0, 0, 1])]);
        assert_eq!(to_change(&tunnel).mac, None);
        assert_eq!(to_change(&tunnel).mtu, None);
    }
}
