//! Test helper: loads boad's kernel path, attaches XDP (generic) and TC egress to interface IFACE
//! of the network namespace NETNS_FILE, prints `attached` and waits to be killed.
//!
//! Usage: boad-attach-and-wait NETNS_FILE IFACE

use std::io::Write;
use std::os::fd::AsFd;

use boad_ebpf_loader::{KernelPath, XdpMode};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: boad-attach-and-wait NETNS_FILE IFACE");
        std::process::exit(2);
    }
    let netns = std::fs::File::open(&args[1]).expect("open the namespace file");
    let mut k = KernelPath::load_folds(|_, _| false).expect("load eBPF programs");
    k.attach_xdp_in(netns.as_fd(), &args[2], XdpMode::Generic)
        .expect("attach XDP");
    k.attach_tc_egress_in(netns.as_fd(), &args[2])
        .expect("attach TC");
    let mut out = std::io::stdout().lock();
    writeln!(out, "attached").expect("stdout");
    out.flush().expect("stdout");
    drop(out);
    loop {
        std::thread::park();
    }
}
