//! Errors of the data-plane adapter, each naming what failed.

use std::{io, path::PathBuf};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum DataplaneError {
    #[error("this mgm binary was built without its XDP object; build it with `cargo xtask build`")]
    NoObject,
    #[error("interface {name:?}: {source}")]
    Interface {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot prepare the pin directory {path}: {source}")]
    PinDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot load the XDP object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("the XDP object has no map {0}")]
    MissingMap(&'static str),
    #[error("the XDP object has no program {0}")]
    MissingProgram(&'static str),
    #[error("map {map}: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("outgoing set: {0}")]
    OifSet(#[from] aya::maps::xdp::XdpMapError),
    #[error("cannot pin map {map}: {source}")]
    Pin {
        map: &'static str,
        #[source]
        source: aya::pin::PinError,
    },
    #[error("program {program}: {source}")]
    Program {
        program: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("cannot attach XDP to {interface} in {mode} mode: {source}")]
    Attach {
        interface: String,
        mode: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("cannot count the possible CPUs: {0}")]
    Cpus(#[source] io::Error),
    #[error("{table} is full ({capacity} entries)")]
    Full { table: &'static str, capacity: u32 },
}
