//! `boadd`, boad's kernel service: run as root once per host, it loads boad's eBPF programs once,
//! attaches them to `lo` (and to the interfaces `--iface` names), owns their maps, and serves the
//! kernel path to the jobs of every user over a Unix socket (`/run/boad/boadd.sock`, or `--socket`
//! / `BOAD_SERVICE_SOCKET`). Jobs register their ranks' sockets (`boad_proto::service`: boadrun
//! does it for its jobs, a rank of a job another launcher started can do it with
//! `boad_proto::service::register`); the service checks that every socket on this host belongs to
//! the registering user, gives the job communicators and a trigger port of its own, and frees them
//! when the job's connection closes. `boadd --install` installs the binary and a systemd unit.
//!
//! Everything attached is a BPF link held by a descriptor of this process and nothing is pinned:
//! when the service ends, however it ends, the programs are gone from every interface.

mod serve;

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use boad_ebpf_loader::{KernelPath, XdpMode};
use clap::Parser;

/// Errors of the service.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// Loading or attaching the programs failed.
    #[error("kernel path: {0}")]
    Kernel(String),
    /// The socket's directory or the socket itself cannot be used.
    #[error("{path}: {why}")]
    Socket {
        /// The path in question.
        path: String,
        /// What is wrong.
        why: String,
    },
    /// Installing failed.
    #[error("install: {0}")]
    Install(String),
    /// Talking to a running service failed.
    #[error("{0}")]
    Client(#[from] boad_proto::service::ServiceError),
    /// Some other I/O failed.
    #[error("{0}")]
    Io(std::io::Error),
}

/// boad's kernel service: loads boad's eBPF programs once per host and serves the kernel path to
/// the jobs of every user over a local socket.
#[derive(Parser, Debug)]
#[command(name = "boadd", version)]
struct Args {
    /// The socket to listen on (its directory must be root's and writable by no one else; it is
    /// created, mode 0755, when missing), or `@NAME`: a name in the abstract namespace of this
    /// network namespace (for hosts that are network namespaces of one machine).
    #[arg(long, env = boad_proto::service::SOCKET_ENV, default_value = boad_proto::service::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Also attach to this interface (the one towards other hosts); repeatable.
    #[arg(long = "iface", value_name = "IFACE")]
    ifaces: Vec<String>,
    /// Jobs one user may have registered at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    jobs_per_user: u32,
    /// Print what the running service at --socket holds, and exit.
    #[arg(long)]
    status: bool,
    /// Install this binary as PREFIX/sbin/boadd and the systemd unit UNIT_DIR/boadd.service, and
    /// exit (then: systemctl daemon-reload && systemctl enable --now boadd).
    #[arg(long)]
    install: bool,
    /// Where --install puts the binary (PREFIX/sbin).
    #[arg(long, default_value = "/usr/local", requires = "install")]
    prefix: PathBuf,
    /// Where --install puts the unit.
    #[arg(long, default_value = "/etc/systemd/system", requires = "install")]
    unit_dir: PathBuf,
    /// Print the systemd unit --install writes, and exit.
    #[arg(long)]
    print_unit: bool,
}

/// The systemd unit for a binary at `bin` listening on `socket`.
fn unit(bin: &Path, socket: &Path) -> String {
    format!(
        "[Unit]
Description=boad kernel service: boad's eBPF programs, loaded once, for the jobs of every user
After=network.target

[Service]
Type=simple
ExecStart={bin} --socket {socket}
Restart=on-failure
# Loading and attaching the programs: CAP_BPF, CAP_NET_ADMIN (and CAP_SYS_ADMIN, CAP_PERFMON on
# some kernels); the socket's directory under /run: CAP_DAC_OVERRIDE is not needed as root owns it.
CapabilityBoundingSet=CAP_BPF CAP_NET_ADMIN CAP_SYS_ADMIN CAP_PERFMON
NoNewPrivileges=yes
ProtectHome=yes
PrivateTmp=yes

[Install]
WantedBy=multi-user.target
",
        bin = bin.display(),
        socket = socket.display()
    )
}

/// `--install`: copies this binary and writes the unit.
fn install(args: &Args) -> Result<(), ServiceError> {
    let err = |what: &str, e: std::io::Error| ServiceError::Install(format!("{what}: {e}"));
    let me = std::env::current_exe().map_err(|e| err("finding this binary", e))?;
    let sbin = args.prefix.join("sbin");
    std::fs::create_dir_all(&sbin).map_err(|e| err(&sbin.display().to_string(), e))?;
    let bin = sbin.join("boadd");
    // Through a temporary name: a running copy of the old binary keeps its file.
    let tmp = sbin.join(".boadd.new");
    std::fs::copy(&me, &tmp).map_err(|e| err(&tmp.display().to_string(), e))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| err(&tmp.display().to_string(), e))?;
    std::fs::rename(&tmp, &bin).map_err(|e| err(&bin.display().to_string(), e))?;
    std::fs::create_dir_all(&args.unit_dir)
        .map_err(|e| err(&args.unit_dir.display().to_string(), e))?;
    let unit_path = args.unit_dir.join("boadd.service");
    std::fs::write(&unit_path, unit(&bin, &args.socket))
        .map_err(|e| err(&unit_path.display().to_string(), e))?;
    println!(
        "boadd: installed {} and {}",
        bin.display(),
        unit_path.display()
    );
    println!("boadd: start it with: systemctl daemon-reload && systemctl enable --now boadd");
    Ok(())
}

/// Makes the socket's directory (root's, 0755, when missing) and refuses one another user could
/// change; refuses a socket a running service answers on.
fn prepare(socket: &Path) -> Result<(), ServiceError> {
    let bad = |why: String| ServiceError::Socket {
        path: socket.display().to_string(),
        why,
    };
    let dir = socket
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .ok_or_else(|| bad("the socket needs a directory".into()))?;
    if !dir.exists() {
        std::fs::create_dir_all(dir).map_err(|e| bad(format!("creating its directory: {e}")))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| bad(format!("its directory: {e}")))?;
    }
    let meta = std::fs::symlink_metadata(dir).map_err(|e| bad(format!("its directory: {e}")))?;
    if !meta.is_dir() || meta.uid() != 0 || meta.mode() & 0o022 != 0 {
        return Err(bad(format!(
            "its directory {} must be a directory of root's that no one else can write to",
            dir.display()
        )));
    }
    if std::fs::symlink_metadata(socket).is_ok() && UnixStream::connect(socket).is_ok() {
        return Err(bad("a service already listens there".into()));
    }
    Ok(())
}

/// The abstract name `socket` gives (`@name`), if it gives one.
fn abstract_name(socket: &Path) -> Option<&[u8]> {
    use std::os::unix::ffi::OsStrExt;
    socket.as_os_str().as_bytes().strip_prefix(b"@")
}

/// Removes a stale socket (none answers there) and listens, mode 0666; or listens on an abstract
/// name (`@name`: this network namespace's, gone when the service ends).
fn listen(socket: &Path) -> Result<UnixListener, ServiceError> {
    let bad = |why: String| ServiceError::Socket {
        path: socket.display().to_string(),
        why,
    };
    if let Some(name) = abstract_name(socket) {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)
            .map_err(|e| bad(e.to_string()))?;
        return UnixListener::bind_addr(&addr).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AddrInUse {
                bad("something already listens under that name".into())
            } else {
                bad(e.to_string())
            }
        });
    }
    prepare(socket)?;
    if std::fs::symlink_metadata(socket).is_ok() {
        std::fs::remove_file(socket).map_err(|e| bad(format!("removing a stale socket: {e}")))?;
    }
    let listener = UnixListener::bind(socket).map_err(|e| bad(e.to_string()))?;
    // Every user may connect: the service checks each registration itself.
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o666))
        .map_err(|e| bad(e.to_string()))?;
    Ok(listener)
}

/// Loads the programs (every fold: the service serves any job) and attaches them.
fn load(ifaces: &[String]) -> Result<KernelPath, ServiceError> {
    let k = |e: boad_ebpf_loader::KernelError| ServiceError::Kernel(e.to_string());
    let mut path = KernelPath::load_folds(|_, _| true).map_err(k)?;
    path.attach_xdp("lo", XdpMode::Generic).map_err(k)?;
    path.attach_tc_egress("lo").map_err(k)?;
    if !ifaces.is_empty() {
        boad_ebpf_loader::accept_local_on_lo().map_err(k)?;
    }
    for iface in ifaces {
        path.attach_xdp(iface, XdpMode::Auto).map_err(k)?;
        path.attach_tc_egress(iface).map_err(k)?;
    }
    // Turns the programs on with a key no job knows: every job's communicators carry their own.
    let mut key = [0u8; 8];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut key))
        .map_err(ServiceError::Io)?;
    path.set_job(u64::from_le_bytes(key) | 1).map_err(k)?;
    Ok(path)
}

fn run(args: &Args) -> Result<(), ServiceError> {
    if args.print_unit {
        print!("{}", unit(Path::new("/usr/local/sbin/boadd"), &args.socket));
        return Ok(());
    }
    if args.install {
        return install(args);
    }
    if args.status {
        let s = boad_proto::service::status_at(&args.socket)?;
        println!(
            "boadd: {} jobs, communicators {}/{}, ports {}/{}",
            s.jobs, s.comms_used, s.comms_max, s.ports_used, s.ports_max
        );
        return Ok(());
    }
    // The cheap checks before seconds of verifier time; the socket appears once the programs are
    // attached, so a job never waits on a service still loading (it takes its other path).
    if abstract_name(&args.socket).is_none() {
        prepare(&args.socket)?;
    } else if boad_proto::service::status_at(&args.socket).is_ok() {
        return Err(ServiceError::Socket {
            path: args.socket.display().to_string(),
            why: "a service already listens there".into(),
        });
    }
    let start = Instant::now();
    let path = load(&args.ifaces)?;
    eprintln!(
        "boadd: programs loaded and attached to lo{} in {:.1} s; serving on {}",
        args.ifaces
            .iter()
            .map(|i| format!(", {i}"))
            .collect::<String>(),
        start.elapsed().as_secs_f64(),
        args.socket.display()
    );
    let socket = args.socket.clone();
    let cleanup = move || {
        if abstract_name(&socket).is_none() {
            let _ = std::fs::remove_file(&socket);
        }
    };
    // SIGTERM / SIGINT / SIGHUP: remove the socket and end (the kernel detaches the programs).
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
    ])
    .map_err(ServiceError::Io)?;
    let on_signal = cleanup.clone();
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            on_signal();
            eprintln!("boadd: signal {sig}: stopped");
            let _ = std::io::stderr().flush();
            std::process::exit(0);
        }
    });
    let listener = listen(&args.socket)?;
    let service = Arc::new(serve::Service::new(
        path,
        serve::Limits {
            jobs_per_user: args.jobs_per_user as usize,
            connections: 256,
            connections_per_user: 16,
        },
        args.ifaces.clone(),
    ));
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        // The user is the kernel's word on the connecting process (SO_PEERCRED), nothing it says.
        let Ok((uid, _)) = serve::peer_cred(&conn) else {
            continue;
        };
        if let Err(why) = service.admit(uid) {
            let _ = conn.set_write_timeout(Some(std::time::Duration::from_millis(100)));
            let _ = conn.write_all(boad_proto::service::Reply::Refused(why).format().as_bytes());
            continue;
        }
        let served = Arc::clone(&service);
        if std::thread::Builder::new()
            .name(format!("boadd uid {uid}"))
            .spawn(move || served.serve(conn, uid))
            .is_err()
        {
            // The connection went with the closure: it is closed, nothing was registered.
            service.leave(uid);
        }
    }
    cleanup();
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("boadd: {e}");
            ExitCode::from(1)
        }
    }
}
