//! `weir`: run jobs on a local mini-cluster, or drive a cluster through its jobmanager's REST API.
//! The verbs and options follow Flink's `flink` command where Weir has the same thing.

use clap::{CommandFactory as _, Parser, Subcommand};
use std::process::ExitCode;
use weir_cli::args::{SAE, SHUTDOWN_ON_ATTACHED_EXIT, names_an_option, reparse};
use weir_cli::client::{DEFAULT_JOBMANAGER, RestClient};

/// Prints a line on standard output; a closed pipe (`weir list | head -1`) ends the program
/// quietly, as Unix tools do, instead of panicking.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
            eprintln!("weir: cannot write to standard output: {e}");
            std::process::exit(2);
        }
    }};
}

mod verbs;

use verbs::jobs::{JobArg, JsonArg, ListArgs};
use verbs::run::{ClusterRunArgs, LocalRunArgs};
use verbs::savepoints::{SavepointAction, SavepointArgs, StopArgs};

#[derive(Parser)]
#[command(
    name = "weir",
    version,
    about = "Weir: a distributed dataflow engine for Rust jobs",
    after_help = "Every verb takes --json for scripts. Progress of long operations (waiting for task slots, \
                  savepoints) goes to standard error, results to standard output."
)]
struct Cli {
    /// The jobmanager's REST address: `host:port` (as Flink's -m) or a URL (`http://host:8081`,
    /// `https://weir.example.com`); before or after the verb.
    #[arg(
        short = 'm',
        long,
        global = true,
        env = "WEIR_JOBMANAGER",
        default_value = DEFAULT_JOBMANAGER,
        value_name = "HOST:PORT|URL"
    )]
    jobmanager: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run jobs in this process, without a cluster.
    Local {
        #[command(subcommand)]
        command: LocalCommand,
    },
    /// Submit a job plugin to the cluster and, unless -d, follow the job to its end (Ctrl-C
    /// stops following and leaves the job running).
    Run(ClusterRunArgs),
    /// Print a job plugin's execution plan as JSON without submitting it (no cluster needed).
    Info(verbs::info::InfoArgs),
    /// List the cluster's jobs that have not ended, newest first (-a: all jobs).
    List(ListArgs),
    /// Show a job's state, vertices and subtasks.
    Status(JobArg),
    /// Cancel a running job.
    Cancel(JobArg),
    /// List the cluster's taskmanagers.
    Taskmanagers(JsonArg),
    /// Show a job's checkpoints: counts, latest, history.
    Checkpoints(JobArg),
    /// Take a savepoint of a running job and wait for it; prints its path.
    Savepoint(SavepointArgs),
    /// Stop a running job with a savepoint: its sources end after it and the job finishes.
    Stop(StopArgs),
}

#[derive(Subcommand)]
enum LocalCommand {
    /// Run a job plugin on a local mini-cluster until its sources end (Ctrl-C cancels it).
    Run(LocalRunArgs),
}

impl Cli {
    /// For the verbs that take a plugin: the words from the plugin on, how many of them are the
    /// verb's positionals, the verb's path of subcommands, and whether it takes
    /// `--shutdown-on-attached-exit`.
    fn trailing(&self) -> Option<(&[String], usize, &'static [&'static str], bool)> {
        match &self.command {
            Command::Run(args) => Some((&args.job.values, 1, &["run"], true)),
            Command::Local { command: LocalCommand::Run(args) } => {
                Some((&args.job.values, 1, &["local", "run"], false))
            }
            Command::Info(args) => Some((&args.values, 1, &["info"], false)),
            Command::Savepoint(SavepointArgs { action: Some(SavepointAction::Check(args)), .. }) => {
                Some((&args.values, 2, &["savepoint", "check"], false))
            }
            _ => None,
        }
    }
}

/// Parses the command line: once, and again when the first parse shows an older form or `-sae`
/// (see [`weir_cli::args`]).
fn parse() -> Cli {
    let Ok(argv) = std::env::args_os().map(std::ffi::OsString::into_string).collect::<Result<Vec<String>, _>>() else {
        // Not UTF-8: clap says which argument.
        return Cli::parse();
    };
    parse_from(argv).unwrap_or_else(|e| e.exit())
}

fn parse_from(argv: Vec<String>) -> Result<Cli, clap::Error> {
    let (argv, cli) = match Cli::try_parse_from(&argv) {
        Ok(cli) => (argv, cli),
        Err(e) => {
            // `-sae` read as `-s ae` beside another `-s`: try Flink's meaning.
            let Some(at) = argv.iter().position(|w| w == SAE) else { return Err(e) };
            let mut again = argv.clone();
            SHUTDOWN_ON_ATTACHED_EXIT.clone_into(&mut again[at]);
            match Cli::try_parse_from(&again) {
                Ok(cli) => (again, cli),
                Err(_) => return Err(e),
            }
        }
    };
    let Some((values, positionals, path, sae)) = cli.trailing() else { return Ok(cli) };
    let mut command = Cli::command();
    command.build();
    let mut longs = Vec::new();
    let mut shorts = Vec::new();
    let mut verb = &command;
    let mut scopes = vec![verb];
    for name in path {
        if let Some(sub) = verb.find_subcommand(name) {
            verb = sub;
            scopes.push(verb);
        }
    }
    for arg in scopes.iter().flat_map(|c| c.get_arguments()) {
        longs.extend(arg.get_long().map(str::to_owned));
        longs.extend(arg.get_all_aliases().unwrap_or_default().into_iter().map(str::to_owned));
        shorts.extend(arg.get_short());
    }
    match reparse(&argv, values, positionals, |w| names_an_option(w, &longs, &shorts), sae) {
        Some(again) => Cli::try_parse_from(again),
        None => Ok(cli),
    }
}

fn main() -> ExitCode {
    let cli = parse();
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("weir: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let client = || RestClient::new(&cli.jobmanager);
    let result = runtime.block_on(async {
        use verbs::{checkpoints, info, jobs, run, savepoints};
        match cli.command {
            Command::Local { command: LocalCommand::Run(args) } => run::local_run(args).await,
            Command::Run(args) => run::cluster_run(&client()?, args).await,
            Command::Info(args) => info::info(args).await,
            Command::List(args) => jobs::list(&client()?, args).await,
            Command::Status(args) => jobs::status(&client()?, args).await,
            Command::Cancel(args) => jobs::cancel(&client()?, args).await,
            Command::Taskmanagers(args) => jobs::taskmanagers(&client()?, args.json).await,
            Command::Checkpoints(args) => checkpoints::checkpoints(&client()?, args).await,
            Command::Savepoint(SavepointArgs { action: Some(SavepointAction::Check(args)), .. }) => {
                savepoints::savepoint_check(args).await
            }
            Command::Savepoint(SavepointArgs { action: Some(SavepointAction::Inspect(args)), .. }) => {
                savepoints::savepoint_inspect(args).await
            }
            Command::Savepoint(args) => savepoints::savepoint(&client()?, args).await,
            Command::Stop(args) => savepoints::stop(&client()?, args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("weir: {}", verbs::output::one_line(&format!("{e:#}")));
            ExitCode::from(2)
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WEIR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only on a terminal: container logs and files get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Cli, clap::Error> {
        parse_from(line.split_whitespace().map(str::to_owned).collect())
    }

    fn run(line: &str) -> ClusterRunArgs {
        match parse(line).unwrap_or_else(|e| panic!("{line}: {e}")).command {
            Command::Run(args) => args,
            _ => panic!("{line}: not run"),
        }
    }

    fn job_args(values: &[String]) -> Vec<&str> {
        weir_cli::args::split_values(values, 1).1.iter().map(String::as_str).collect()
    }

    #[test]
    fn m_takes_host_port_before_or_after_the_verb() {
        for line in ["weir -m jm:8081 list", "weir list -m jm:8081", "weir --jobmanager jm:8081 list -a"] {
            let cli = parse(line).unwrap();
            assert_eq!(cli.jobmanager, "jm:8081", "{line}");
            assert_eq!(RestClient::new(&cli.jobmanager).unwrap().base(), "http://jm:8081", "{line}");
        }
        let cli = parse("weir run -m https://weir.example.com -d job.so").unwrap();
        assert_eq!(RestClient::new(&cli.jobmanager).unwrap().base(), "https://weir.example.com");
    }

    #[test]
    fn d_is_detached_and_job_arguments_follow_the_plugin() {
        let args = run("weir run -d -p 2 job.so --input x -p 3 -d");
        assert!(args.detached);
        assert_eq!(args.job.parallelism, Some(2));
        assert_eq!(args.job.values[0], "job.so");
        assert_eq!(job_args(&args.job.values), ["--input", "x", "-p", "3", "-d"]);
        // `--` right after the plugin still works.
        let args = run("weir run job.so -- --input x");
        assert!(!args.detached);
        assert_eq!(job_args(&args.job.values), ["--input", "x"]);
        // The older form: weir's options between the plugin and `--`.
        let args =
            run("weir run job.so -p 4 --detached --checkpoint-interval 1s -Dstate.backend.type=rocksdb -- --input x");
        assert!(args.detached);
        assert_eq!(args.job.parallelism, Some(4));
        assert_eq!(args.job.checkpoints.checkpoint_interval.as_deref(), Some("1s"));
        assert_eq!(args.job.settings, ["state.backend.type=rocksdb"]);
        assert_eq!(job_args(&args.job.values), ["--input", "x"]);
        // A job's own options before a `--` of its own.
        let args = run("weir run job.so --input x -- y");
        assert_eq!(job_args(&args.job.values), ["--input", "x", "--", "y"]);
    }

    #[test]
    fn d_settings_repeat_and_attach() {
        let args = run("weir run -D execution.checkpointing.interval=10s -Dstate.backend.type=rocksdb job.so");
        assert_eq!(args.job.settings, ["execution.checkpointing.interval=10s", "state.backend.type=rocksdb"]);
    }

    #[test]
    fn sae_is_flinks_shutdown_on_attached_exit() {
        for line in [
            "weir run -sae job.so",
            "weir run --sae job.so",
            "weir run --shutdown-on-attached-exit job.so",
            "weir run --shutdownOnAttachedExit job.so",
            "weir run -s /sp -sae job.so",
        ] {
            let args = run(line);
            assert!(args.shutdown_on_attached_exit, "{line}");
            assert_ne!(args.job.savepoint.from_savepoint.as_deref(), Some("ae"), "{line}");
        }
        assert!(parse("weir run -d -sae job.so").is_err());
    }

    #[test]
    fn the_other_verbs_with_a_plugin_take_job_arguments_after_it() {
        let Command::Info(info) = parse("weir info -p 3 job.so --query q5").unwrap().command else { panic!("info") };
        assert_eq!(info.parallelism, 3);
        assert_eq!(job_args(&info.values), ["--query", "q5"]);
        let Command::Local { command: LocalCommand::Run(local) } =
            parse("weir local run job.so -p 2 -- --query q5").unwrap().command
        else {
            panic!("local run")
        };
        assert_eq!(local.job.parallelism, Some(2));
        assert_eq!(job_args(&local.job.values), ["--query", "q5"]);
        let Command::Savepoint(SavepointArgs { action: Some(SavepointAction::Check(check)), .. }) =
            parse("weir savepoint check job.so /sp -p 2 -n -- --query q5").unwrap().command
        else {
            panic!("savepoint check")
        };
        assert_eq!((check.parallelism, check.allow_non_restored_state), (2, true));
        assert_eq!(weir_cli::args::split_values(&check.values, 2).1, ["--query", "q5"]);
        let Command::List(list) = parse("weir list -a --json").unwrap().command else { panic!("list") };
        assert!(list.all && list.json);
    }
}
