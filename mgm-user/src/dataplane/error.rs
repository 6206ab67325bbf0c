//! Errors of the data-plane adapter, each naming what failed.

use std::{io, path::PathBuf};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum DataplaneError {
    #[error("this mgm binary was built without its XDP object; build it with `cargo xtask build`")]
    NoObject,
    #[error("interface {name:?}")]
    Interface {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot prepare the pin directory {path}")]
    PinDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot load the XDP object")]
    Load(#[from] aya::EbpfError),
    #[error("the XDP object has no map {0}")]
    MissingMap(&'static str),
    #[error("the XDP object has no program {0}")]
    MissingProgram(&'static str),
    #[error("map {map}")]
    Map {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("cannot fill an outgoing set")]
    OifSet(#[from] aya::maps::xdp::XdpMapError),
    #[error("program {program}")]
    Program {
        program: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("cannot attach XDP to {interface} in {mode} mode")]
    Attach {
        interface: String,
        mode: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("cannot start the XDP attach worker")]
    Worker(#[source] io::Error),
    #[error("cannot count the possible CPUs")]
    Cpus(#[source] io::Error),
    #[error("{table} is full ({capacity} entries)")]
    Full { table: &'static str, capacity: u32 },
}

/// `error` and every error behind it, joined with ": ", for log lines (the types' own
/// `Display` names only their own layer).
pub fn report(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(e) = next {
        text.push_str(": ");
        text.push_str(&e.to_string());
        next = e.source();
    }
    text
}

/// For `map_err`: a failed operation on map `map`.
pub(super) fn map_err(map: &'static str) -> impl Fn(aya::maps::MapError) -> DataplaneError {
    move |source| DataplaneError::Map { map, source }
}
