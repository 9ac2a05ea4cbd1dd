use clap::Parser;
use portcullis::cli::{Args, Command, LogFormat, SchemaKind};
use tracing_subscriber::EnvFilter;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if let Some(Command::Schema { of }) = args.command {
        let schema = match of {
            SchemaKind::ChartValues => portcullis::chart::values_schema_json(),
            SchemaKind::Config => {
                serde_json::to_string_pretty(&portcullis::settings::Settings::schema())
                    .unwrap_or_default()
                    + "\n"
            }
        };
        print!("{schema}");
        return std::process::ExitCode::SUCCESS;
    }
    if let Some(Command::Check(check)) = &args.command {
        // Only what goes wrong (a watch refused by RBAC, say) goes to stderr beside the report.
        init_logging(&args, "warn");
        return portcullis::check::main(check);
    }
    init_logging(&args, "info");
    let runtime = match runtime_builder(args.worker_threads).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(portcullis::run::run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) if e.is::<portcullis::run::ConfigFileError>() => {
            tracing::error!("{e:#}");
            std::process::ExitCode::from(2)
        }
        Err(e) => {
            tracing::error!("{e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// One worker per CPU the process may use; with a single one (`--worker-threads 1`, or one CPU by
/// affinity or cgroup quota) a current-thread runtime, which skips the work-stealing machinery that
/// one worker cannot use.
fn runtime_builder(worker_threads: usize) -> tokio::runtime::Builder {
    let workers = match worker_threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(workers);
        builder
    }
}

fn init_logging(args: &Args, default_level: &str) {
    let filter = match &args.log_level {
        Some(level) => EnvFilter::new(level),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level)),
    };
    // `--access-log` is heard whatever the level, unless the filter says otherwise for its target.
    let access = portcullis::access_log::TARGET;
    let filter = match format!("{access}=info").parse() {
        Ok(directive) if args.access_log && !filter.to_string().contains(access) => {
            filter.add_directive(directive)
        }
        _ => filter,
    };
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match args.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
