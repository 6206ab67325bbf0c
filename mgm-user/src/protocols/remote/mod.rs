//! Out-of-process routing-protocol modules: a module in any language connects to mgm's Unix
//! socket, registers, takes interfaces, adds and deletes memberships, enumerates, and gets
//! every callback of spec §7 as a message. JSON, one object per line; the messages are in
//! [`wire`], and `mgm-user/docs/module-protocol.md` walks through an exchange.
//!
//! - [`access`]: who may connect (root, or a named group), and the socket file's place.
//! - [`link`]: a connection's reader and writer threads.
//! - [`module`]: the core's view of a module, a [`crate::core::RoutingProtocol`].
//! - [`server`]: the socket, one session per connection, requests run on the core.

pub mod access;
pub mod link;
pub mod module;
pub mod server;
pub mod wire;

pub use server::{ModuleServer, ServerEvent};
