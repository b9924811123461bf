//! A private PostgreSQL cluster started from the system's binaries, so a laptop run (and the
//! test suite) needs neither a server nor setup: `initdb` on first use, then `pg_ctl start`
//! listening only on 127.0.0.1 with trust authentication, its unix socket inside the data dir.
//!
//! PostgreSQL refuses to run as root, so when this process is root every PostgreSQL binary runs
//! as an unprivileged OS user (`postgres`, else `nobody`) that owns the data directory.
//!
//! If a cluster from an earlier run is still up on the same data directory (another process of
//! ours shares it), it is attached to rather than started, and left running on stop. A
//! `postmaster.pid` left by a killed run is detected and removed.

use crate::config::PostgresConfig;
use crate::error::PostgresError;
use std::fs;
use std::io::Write as _;
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// Superuser created by `initdb`; the URL connects as this role.
pub const SUPERUSER: &str = "postgres";
/// Database created in the cluster for the application.
pub const DATABASE: &str = "tradestream";
/// Binaries the private cluster needs.
const REQUIRED_BINARIES: [&str; 4] = ["initdb", "pg_ctl", "postgres", "createdb"];
/// Our settings file, included from `postgresql.conf` and rewritten on every start.
const CONF_FILE: &str = "tradestream.conf";
/// Server log of the private cluster, inside the data directory.
const LOG_FILE: &str = "tradestream-postgres.log";
/// Unix socket paths longer than this do not fit `sockaddr_un`.
const MAX_SOCKET_PATH: usize = 100;
/// How long `pg_ctl` may wait for start and stop.
const PG_CTL_TIMEOUT_SECS: &str = "60";
/// Start attempts: another process may grab the port we picked, or the backends of a killed
/// server may still hold its shared memory for a moment.
const START_ATTEMPTS: usize = 3;
const NOT_FOUND_HINT: &str = "install Debian package postgresql or set TRADESTREAM_PG_BIN_DIR (bin_dir) to the directory holding initdb and pg_ctl";

/// The unprivileged account PostgreSQL runs as when we are root.
#[derive(Debug, Clone, PartialEq, Eq)]
struct OsUser {
    name: String,
    uid: u32,
    gid: u32,
}

/// A running private cluster. Stops it (and, when ephemeral, deletes its data) on
/// [`stop`](Self::stop) or drop, unless it was already running when we attached to it.
#[derive(Debug)]
pub struct EmbeddedPostgres {
    data_dir: PathBuf,
    bin_dir: PathBuf,
    port: u16,
    run_as: Option<OsUser>,
    ephemeral: bool,
    /// Started by us (false: attached to a cluster another process started).
    owned: bool,
    stopped: bool,
    watchdog: Option<Child>,
}

/// Options the public [`EmbeddedPostgres::start`] does not expose.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct StartOptions {
    /// Also start a small process that stops the cluster when this process exits, even when
    /// it is killed: for clusters held in statics, which are never dropped.
    pub(crate) watchdog: bool,
}

impl EmbeddedPostgres {
    /// Initialises (if needed) and starts the private cluster described by `config`, and
    /// creates the `tradestream` database if it is missing. Blocking: call it from
    /// `spawn_blocking` inside async code.
    pub fn start(config: &PostgresConfig) -> Result<Self, PostgresError> {
        Self::start_with(config, StartOptions::default())
    }

    pub(crate) fn start_with(
        config: &PostgresConfig,
        options: StartOptions,
    ) -> Result<Self, PostgresError> {
        config.validate().map_err(PostgresError::Config)?;
        let bin_dir = resolve_bin_dir(config.bin_dir.as_deref())?;
        let run_as = if running_as_root() {
            Some(resolve_os_user(config.os_user.as_deref())?)
        } else {
            None
        };
        let data_dir = std::path::absolute(config.effective_data_dir()).map_err(|e| {
            PostgresError::embedded(
                "resolving data_dir",
                format!("{}: {e}", config.effective_data_dir().display()),
            )
        })?;

        let mut pg = EmbeddedPostgres {
            data_dir,
            bin_dir,
            port: 0,
            run_as,
            ephemeral: config.ephemeral,
            owned: false,
            stopped: true,
            watchdog: None,
        };
        pg.prepare_data_dir()?;
        if let Some(port) = pg.running_port()? {
            tracing::info!(port, data_dir = %pg.data_dir.display(), "attaching to the running private PostgreSQL cluster");
            pg.port = port;
            pg.stopped = false;
        } else {
            pg.start_server(config.port)?;
            pg.owned = true;
            pg.stopped = false;
        }
        if options.watchdog && pg.owned {
            pg.watchdog = Some(pg.spawn_watchdog()?);
        }
        pg.create_database(DATABASE)?;
        Ok(pg)
    }

    /// `postgres://postgres@127.0.0.1:<port>/tradestream`.
    pub fn url(&self) -> String {
        self.url_for(DATABASE)
    }

    /// URL of another database in this cluster.
    pub fn url_for(&self, database: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{database}", self.port)
    }

    /// TCP port the cluster listens on (127.0.0.1 only).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Absolute data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Whether this handle started the cluster (and so stops it).
    pub fn is_owned(&self) -> bool {
        self.owned
    }

    /// Stops the cluster (`pg_ctl stop -m fast`, waiting) and deletes the data directory when
    /// ephemeral. A cluster we attached to is left running.
    pub fn stop(mut self) -> Result<(), PostgresError> {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> Result<(), PostgresError> {
        if self.stopped {
            return Ok(());
        }
        self.stopped = true;
        if let Some(mut w) = self.watchdog.take() {
            // Best effort: the watchdog only matters if we die before getting here.
            let _ = w.kill();
            let _ = w.wait();
        }
        if !self.owned {
            return Ok(());
        }
        let out = self.run_pg(
            "pg_ctl",
            &[
                "stop",
                "-D",
                path_str(&self.data_dir)?,
                "-m",
                "fast",
                "-w",
                "-t",
                PG_CTL_TIMEOUT_SECS,
            ],
        )?;
        if !out.status.success() {
            return Err(PostgresError::embedded(
                "pg_ctl stop",
                format!("{}{}", output_text(&out), self.log_tail()),
            ));
        }
        tracing::info!(data_dir = %self.data_dir.display(), "private PostgreSQL cluster stopped");
        if self.ephemeral {
            fs::remove_dir_all(&self.data_dir).map_err(|e| {
                PostgresError::embedded(
                    "removing the ephemeral data dir",
                    format!("{}: {e}", self.data_dir.display()),
                )
            })?;
        }
        Ok(())
    }

    /// Creates the data directory, owned by the user PostgreSQL runs as, and `initdb`s it if
    /// it holds no cluster yet.
    fn prepare_data_dir(&self) -> Result<(), PostgresError> {
        let dir = &self.data_dir;
        let io = |what: &str, e: std::io::Error| {
            PostgresError::embedded(
                "preparing the data dir",
                format!("{what} {}: {e}", dir.display()),
            )
        };
        if dir.join("PG_VERSION").is_file() {
            if let Some(user) = &self.run_as {
                let meta = fs::metadata(dir).map_err(|e| io("reading", e))?;
                if meta.uid() != user.uid {
                    tracing::info!(user = %user.name, data_dir = %dir.display(), "handing the data dir to the PostgreSQL user");
                    chown_recursive(dir, user).map_err(|e| io("changing the owner of", e))?;
                }
            }
            return Ok(());
        }

        fs::create_dir_all(dir).map_err(|e| io("creating", e))?;
        if fs::read_dir(dir)
            .map_err(|e| io("reading", e))?
            .next()
            .is_some()
        {
            return Err(PostgresError::embedded(
                "preparing the data dir",
                format!(
                    "{} is not empty and holds no PostgreSQL cluster; empty it or set TRADESTREAM_PG_DATA_DIR (data_dir) elsewhere",
                    dir.display()
                ),
            ));
        }
        // PostgreSQL refuses a data directory others can read.
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| io("restricting", e))?;
        if let Some(user) = &self.run_as {
            std::os::unix::fs::chown(dir, Some(user.uid), Some(user.gid))
                .map_err(|e| io("changing the owner of", e))?;
            let probe = self
                .pg_command_raw(
                    "sh",
                    &["-c", "test -w \"$0\" && test -x \"$0\"", path_str(dir)?],
                )
                .output();
            if !probe.map(|o| o.status.success()).unwrap_or(false) {
                return Err(PostgresError::embedded(
                    "preparing the data dir",
                    format!(
                        "OS user {} cannot reach {}: make its parent directories traversable (chmod o+x) or set TRADESTREAM_PG_DATA_DIR (data_dir) to a directory that user can reach",
                        user.name,
                        dir.display()
                    ),
                ));
            }
        }

        let mut args = vec![
            "-D",
            path_str(dir)?,
            "-U",
            SUPERUSER,
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
        ];
        if self.ephemeral {
            args.push("--no-sync");
        }
        tracing::info!(data_dir = %dir.display(), "initialising a private PostgreSQL cluster");
        let out = self.run_pg("initdb", &args)?;
        if !out.status.success() {
            return Err(PostgresError::embedded("initdb", output_text(&out)));
        }

        // Trust only local connections: the socket inside the data dir and 127.0.0.1.
        self.write_owned(
            &dir.join("pg_hba.conf"),
            "# Written by tradestream: trust authentication for this machine only.\n\
             local all all trust\n\
             host  all all 127.0.0.1/32 trust\n",
            false,
        )?;
        self.write_owned(
            &dir.join("postgresql.conf"),
            &format!("\n# Settings managed by tradestream, rewritten on every start.\ninclude_if_exists = '{CONF_FILE}'\n"),
            true,
        )?;
        Ok(())
    }

    /// The port of a cluster already running on this data dir, after removing a stale
    /// `postmaster.pid` left by a killed run.
    fn running_port(&self) -> Result<Option<u16>, PostgresError> {
        let pid_file = self.data_dir.join("postmaster.pid");
        let Ok(text) = fs::read_to_string(&pid_file) else {
            return Ok(None);
        };
        let mut lines = text.lines();
        let pid = lines.next().and_then(|l| l.trim().parse::<u32>().ok());
        let port = text
            .lines()
            .nth(3)
            .and_then(|l| l.trim().parse::<u16>().ok());
        if let (Some(pid), Some(port)) = (pid, port)
            && is_postgres_process(pid)
            && self
                .run_pg("pg_ctl", &["status", "-D", path_str(&self.data_dir)?])?
                .status
                .success()
        {
            return Ok(Some(port));
        }
        tracing::warn!(pid_file = %pid_file.display(), "removing a stale postmaster.pid left by a killed run");
        fs::remove_file(&pid_file).map_err(|e| {
            PostgresError::embedded(
                "removing stale postmaster.pid",
                format!("{}: {e}", pid_file.display()),
            )
        })?;
        Ok(None)
    }

    fn start_server(&mut self, configured_port: Option<u16>) -> Result<(), PostgresError> {
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            self.port = match configured_port {
                Some(p) => p,
                None => free_port()?,
            };
            self.write_conf()?;
            let log = self.data_dir.join(LOG_FILE);
            let out = self.run_pg(
                "pg_ctl",
                &[
                    "start",
                    "-D",
                    path_str(&self.data_dir)?,
                    "-l",
                    path_str(&log)?,
                    "-w",
                    "-t",
                    PG_CTL_TIMEOUT_SECS,
                ],
            )?;
            if out.status.success() {
                tracing::info!(port = self.port, data_dir = %self.data_dir.display(), "private PostgreSQL cluster started");
                return Ok(());
            }
            let tail = self.log_tail();
            let port_taken =
                tail.contains("could not bind") || tail.contains("Address already in use");
            // Backends of a killed server exit when they notice; until then they hold its
            // shared memory.
            let orphans_exiting = tail.contains("pre-existing shared memory block");
            last_error = Some(PostgresError::embedded(
                "pg_ctl start",
                format!("port {}: {}{tail}", self.port, output_text(&out)),
            ));
            if orphans_exiting {
                tracing::warn!(
                    "processes of a killed PostgreSQL still hold its shared memory; retrying"
                );
                std::thread::sleep(std::time::Duration::from_secs(1));
                continue;
            }
            if !port_taken || configured_port.is_some() {
                break;
            }
            tracing::warn!(
                port = self.port,
                "port taken while starting PostgreSQL; trying another"
            );
        }
        Err(last_error
            .unwrap_or_else(|| PostgresError::embedded("pg_ctl start", "no attempt made")))
    }

    fn write_conf(&self) -> Result<(), PostgresError> {
        let socket_path_len =
            self.data_dir.as_os_str().len() + format!("/.s.PGSQL.{}", self.port).len();
        let socket_dir = if socket_path_len <= MAX_SOCKET_PATH {
            path_str(&self.data_dir)?.replace('\'', "''")
        } else {
            // Too long for a unix socket: TCP only.
            String::new()
        };
        let mut conf = format!(
            "# Written by tradestream on every start of the private cluster.\n\
             port = {port}\n\
             listen_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{socket_dir}'\n\
             lc_messages = 'C'\n\
             max_connections = 200\n",
            port = self.port
        );
        if self.ephemeral {
            // Throw-away data: durability buys nothing, speed does.
            conf.push_str("fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n");
        }
        self.write_owned(&self.data_dir.join(CONF_FILE), &conf, false)
    }

    /// Creates `name` unless it exists.
    fn create_database(&self, name: &str) -> Result<(), PostgresError> {
        let port = self.port.to_string();
        let out = self.run_pg(
            "createdb",
            &["-h", "127.0.0.1", "-p", &port, "-U", SUPERUSER, name],
        )?;
        if out.status.success() || output_text(&out).contains("already exists") {
            Ok(())
        } else {
            Err(PostgresError::embedded(
                format!("createdb {name}"),
                output_text(&out),
            ))
        }
    }

    /// A process that waits for this one to disappear, then stops the cluster (and deletes
    /// ephemeral data). Runs as the PostgreSQL user in its own process group, so a Ctrl-C
    /// aimed at the test run does not kill it before it has done its job.
    fn spawn_watchdog(&self) -> Result<Child, PostgresError> {
        let parent = std::process::id().to_string();
        let pg_ctl = self.bin_dir.join("pg_ctl");
        let script = "while [ -d \"/proc/$0\" ]; do sleep 1; done; \
                      \"$1\" stop -D \"$2\" -m immediate >/dev/null 2>&1; \
                      if [ \"$3\" = 1 ]; then rm -rf \"$2\"; fi";
        let ephemeral = if self.ephemeral { "1" } else { "0" };
        self.pg_command_raw(
            "sh",
            &[
                "-c",
                script,
                &parent,
                path_str(&pg_ctl)?,
                path_str(&self.data_dir)?,
                ephemeral,
            ],
        )
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| PostgresError::embedded("starting the cluster watchdog", e.to_string()))
    }

    /// Runs one of the PostgreSQL binaries (as the PostgreSQL user when we are root).
    fn run_pg(&self, binary: &str, args: &[&str]) -> Result<Output, PostgresError> {
        let program = self.bin_dir.join(binary);
        self.pg_command_raw(path_str(&program)?, args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| {
                PostgresError::embedded(
                    binary.to_string(),
                    format!("cannot run {}: {e}", program.display()),
                )
            })
    }

    fn pg_command_raw(&self, program: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(program);
        cmd.args(args)
            // The PostgreSQL user may not be able to enter our working directory.
            .current_dir("/")
            .env("LC_ALL", "C")
            .env_remove("PGDATA")
            .env_remove("PGHOST")
            .env_remove("PGPORT")
            .env_remove("PGUSER")
            .env_remove("PGDATABASE")
            .env_remove("PGPASSWORD");
        if let Some(user) = &self.run_as {
            // std drops root's supplementary groups when it switches the uid.
            cmd.uid(user.uid)
                .gid(user.gid)
                .env("HOME", "/")
                .env("USER", &user.name);
        }
        cmd
    }

    /// Writes (or appends to) a file in the data dir, owned by the PostgreSQL user.
    fn write_owned(&self, path: &Path, text: &str, append: bool) -> Result<(), PostgresError> {
        let err = |e: std::io::Error| {
            PostgresError::embedded("writing configuration", format!("{}: {e}", path.display()))
        };
        let mut f = fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(path)
            .map_err(err)?;
        f.write_all(text.as_bytes()).map_err(err)?;
        if let Some(user) = &self.run_as {
            std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid)).map_err(err)?;
        }
        Ok(())
    }

    fn log_tail(&self) -> String {
        let log = self.data_dir.join(LOG_FILE);
        match fs::read_to_string(&log) {
            Ok(text) => {
                let lines: Vec<&str> = text.lines().collect();
                let tail = lines[lines.len().saturating_sub(15)..].join("\n  ");
                format!("\n  server log {}:\n  {tail}", log.display())
            }
            Err(_) => String::new(),
        }
    }
}

impl Drop for EmbeddedPostgres {
    fn drop(&mut self) {
        if let Err(e) = self.stop_inner() {
            tracing::error!(error = %e, "stopping the private PostgreSQL cluster");
        }
    }
}

fn path_str(p: &Path) -> Result<&str, PostgresError> {
    p.to_str().ok_or_else(|| {
        PostgresError::embedded(
            "resolving paths",
            format!("{} is not valid UTF-8", p.display()),
        )
    })
}

fn output_text(out: &Output) -> String {
    let mut s = String::from_utf8_lossy(&out.stderr).trim().to_string();
    let stdout = String::from_utf8_lossy(&out.stdout);
    if s.is_empty() {
        s = stdout.trim().to_string();
    }
    format!("{} ({})", s, out.status)
}

fn running_as_root() -> bool {
    // /proc/self belongs to the effective uid; `id -u` is the portable fallback.
    match fs::metadata("/proc/self") {
        Ok(m) => m.uid() == 0,
        Err(_) => id_number("-u", None) == Some(0),
    }
}

/// `id <flag> [user]` as a number.
fn id_number(flag: &str, user: Option<&str>) -> Option<u32> {
    let mut cmd = Command::new("id");
    cmd.arg(flag);
    if let Some(u) = user {
        cmd.arg(u);
    }
    let out = cmd.stderr(Stdio::null()).output().ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

fn lookup_user(name: &str) -> Option<OsUser> {
    Some(OsUser {
        name: name.to_string(),
        uid: id_number("-u", Some(name))?,
        gid: id_number("-g", Some(name))?,
    })
}

fn resolve_os_user(configured: Option<&str>) -> Result<OsUser, PostgresError> {
    if let Some(name) = configured {
        let user = lookup_user(name).ok_or_else(|| {
            PostgresError::Config(vec![format!(
                "TRADESTREAM_PG_OS_USER (os_user): no OS user named {name:?}; create it or name an existing unprivileged user"
            )])
        })?;
        if user.uid == 0 {
            return Err(PostgresError::Config(vec![format!(
                "TRADESTREAM_PG_OS_USER (os_user): {name:?} has uid 0 and PostgreSQL refuses to run as root"
            )]));
        }
        return Ok(user);
    }
    ["postgres", "nobody"].iter().find_map(|n| lookup_user(n).filter(|u| u.uid != 0)).ok_or_else(|| {
        PostgresError::Config(vec![
            "TRADESTREAM_PG_OS_USER (os_user): running as root and neither user postgres nor nobody exists; name an unprivileged user for PostgreSQL".to_string(),
        ])
    })
}

/// Finds the directory with the server binaries: the setting, `pg_config --bindir`, the highest
/// `/usr/lib/postgresql/*/bin`, or `PATH`.
pub fn resolve_bin_dir(configured: Option<&Path>) -> Result<PathBuf, PostgresError> {
    if let Some(dir) = configured {
        return check_bin_dir(dir).map(|()| dir.to_path_buf());
    }
    let mut candidates = Vec::new();
    if let Ok(out) = Command::new("pg_config")
        .arg("--bindir")
        .stderr(Stdio::null())
        .output()
        && out.status.success()
    {
        candidates.push(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    }
    let mut versioned: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            Some((version, e.path().join("bin")))
        })
        .collect();
    versioned.sort_by_key(|v| std::cmp::Reverse(v.0));
    candidates.extend(versioned.into_iter().map(|(_, p)| p));
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path));
    }
    candidates.into_iter().find(|dir| check_bin_dir(dir).is_ok()).ok_or_else(|| {
        PostgresError::BinariesNotFound(format!(
            "no directory with {} found via pg_config --bindir, /usr/lib/postgresql/*/bin or PATH: {NOT_FOUND_HINT}",
            REQUIRED_BINARIES.join(", ")
        ))
    })
}

fn check_bin_dir(dir: &Path) -> Result<(), PostgresError> {
    let missing: Vec<&str> = REQUIRED_BINARIES
        .iter()
        .copied()
        .filter(|b| !dir.join(b).is_file())
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(PostgresError::BinariesNotFound(format!(
            "{} missing in {}: {NOT_FOUND_HINT}",
            missing.join(", "),
            dir.display()
        )))
    }
}

fn is_postgres_process(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| c.trim() == "postgres" || c.trim() == "postmaster")
        .unwrap_or(false)
}

fn free_port() -> Result<u16, PostgresError> {
    TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| PostgresError::embedded("picking a free port", e.to_string()))
}

fn chown_recursive(path: &Path, user: &OsUser) -> std::io::Result<()> {
    std::os::unix::fs::lchown(path, Some(user.uid), Some(user.gid))?;
    let meta = fs::symlink_metadata(path)?;
    if meta.is_dir() {
        for entry in fs::read_dir(path)? {
            chown_recursive(&entry?.path(), user)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_in(dir: &Path) -> PostgresConfig {
        PostgresConfig {
            data_dir: Some(dir.join("data")),
            ephemeral: false,
            ..Default::default()
        }
    }

    /// A scratch directory the PostgreSQL user can reach when we run as root.
    fn scratch() -> tempfile::TempDir {
        let dir = tempfile::Builder::new()
            .prefix("tradestream-embedded-test-")
            .tempdir()
            .expect("tempdir");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
        dir
    }

    #[test]
    fn missing_binaries_are_named_with_a_hint() {
        let dir = scratch();
        let err = resolve_bin_dir(Some(dir.path())).expect_err("empty dir has no binaries");
        let msg = err.to_string();
        assert!(msg.starts_with("PostgreSQL binaries not found"), "{msg}");
        assert!(msg.contains("initdb") && msg.contains("pg_ctl"), "{msg}");
        assert!(
            msg.contains("postgresql") && msg.contains("TRADESTREAM_PG_BIN_DIR"),
            "{msg}"
        );
        assert_eq!(err.class(), tradestream_schemas::ErrorClass::Fatal);
    }

    #[test]
    fn invalid_config_is_refused_before_anything_runs() {
        let config = PostgresConfig {
            port: Some(0),
            max_connections: 0,
            ..Default::default()
        };
        match EmbeddedPostgres::start(&config) {
            Err(PostgresError::Config(problems)) => assert_eq!(problems.len(), 2, "{problems:?}"),
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn starts_restarts_after_a_kill_and_stops() {
        let dir = scratch();
        let config = config_in(dir.path());

        let pg = EmbeddedPostgres::start(&config).expect("start");
        assert!(pg.is_owned());
        assert!(
            pg.url().starts_with("postgres://postgres@127.0.0.1:"),
            "{}",
            pg.url()
        );
        assert!(pg.url().ends_with("/tradestream"));
        let data_dir = pg.data_dir().to_path_buf();
        assert!(data_dir.join("PG_VERSION").is_file());
        let hba = fs::read_to_string(data_dir.join("pg_hba.conf")).expect("hba");
        assert!(
            hba.contains("127.0.0.1/32 trust") && !hba.contains("0.0.0.0"),
            "{hba}"
        );
        // Listening on the port we were told.
        assert!(std::net::TcpStream::connect(("127.0.0.1", pg.port())).is_ok());

        // A second start on the same data dir attaches instead of failing, and leaves the
        // cluster running when it stops.
        let attached = EmbeddedPostgres::start(&config).expect("attach");
        assert!(!attached.is_owned());
        assert_eq!(attached.port(), pg.port());
        attached.stop().expect("detach");
        assert!(std::net::TcpStream::connect(("127.0.0.1", pg.port())).is_ok());

        // Simulate a killed run: the postmaster dies without cleaning up its pid file.
        let pid: i32 = fs::read_to_string(data_dir.join("postmaster.pid"))
            .expect("pid file")
            .lines()
            .next()
            .and_then(|l| l.parse().ok())
            .expect("pid");
        let status = Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        for _ in 0..100 {
            if !is_postgres_process(pid as u32) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert!(
            data_dir.join("postmaster.pid").exists(),
            "the killed server leaves its pid file"
        );
        std::mem::forget(pg); // its Drop would try to stop the dead server

        let restarted = EmbeddedPostgres::start(&config).expect("restart after kill");
        assert!(restarted.is_owned());
        assert!(std::net::TcpStream::connect(("127.0.0.1", restarted.port())).is_ok());
        let port = restarted.port();
        restarted.stop().expect("stop");
        assert!(!data_dir.join("postmaster.pid").exists());
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
        assert!(
            data_dir.join("PG_VERSION").is_file(),
            "not ephemeral: data kept"
        );
    }

    #[test]
    fn ephemeral_cluster_is_deleted_on_drop() {
        let dir = scratch();
        let config = PostgresConfig {
            ephemeral: true,
            ..config_in(dir.path())
        };
        let pg = EmbeddedPostgres::start(&config).expect("start");
        let data_dir = pg.data_dir().to_path_buf();
        let port = pg.port();
        assert!(data_dir.join("PG_VERSION").is_file());
        drop(pg);
        assert!(!data_dir.exists(), "ephemeral data dir removed");
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    }

    #[test]
    fn a_non_empty_foreign_directory_is_refused() {
        let dir = scratch();
        let data = dir.path().join("data");
        fs::create_dir_all(&data).expect("mkdir");
        fs::write(data.join("precious.txt"), "keep me").expect("write");
        let err = EmbeddedPostgres::start(&config_in(dir.path())).expect_err("refused");
        assert!(err.to_string().contains("not empty"), "{err}");
        assert!(data.join("precious.txt").exists());
    }
}
