//! Command-line forms that a single clap parse cannot tell apart.
//!
//! Job arguments follow the plugin, as with `flink run job.jar --input x`: everything after the
//! plugin goes to the job, and weir's own options come before the plugin. The older form
//! `weir run job.so -p 4 -- --input x`, with weir's options between the plugin and `--`, keeps
//! working: when every option-looking word between the plugin and the first `--` is one of
//! weir's options, those words are weir's. `weir run job.so -- ARGS` gives the job every word
//! after that first `--` (later ones included).
//!
//! Flink's `-sae` (`--shutdownOnAttachedExit`) is spelled `--shutdown-on-attached-exit` here;
//! clap would read `-sae` as `-s ae` (a savepoint named `ae`), so it is rewritten first.

/// Flink's short form of `--shutdown-on-attached-exit`.
pub const SAE: &str = "-sae";
/// What [`SAE`] is rewritten to.
pub const SHUTDOWN_ON_ATTACHED_EXIT: &str = "--shutdown-on-attached-exit";

/// The words after a verb's options: its positionals (the plugin, and for `savepoint check` the
/// savepoint) and the job's arguments, which clap collects as one list once the plugin is seen.
/// A `--` right after the positionals is dropped (`weir run job.so -- ARGS`).
pub fn split_values(values: &[String], positionals: usize) -> (&[String], &[String]) {
    let (positional, rest) = values.split_at(positionals.min(values.len()));
    let job_args = match rest.first() {
        Some(first) if first == "--" => &rest[1..],
        _ => rest,
    };
    (positional, job_args)
}

/// The command line to parse again, if the first parse took weir's options for job arguments
/// (the older `PLUGIN [OPTIONS] -- JOB_ARGS` form) or `-sae` for `-s ae`.
///
/// `argv` is the whole command line (program name first); `values` what the first parse
/// collected from the plugin on (see [`split_values`]), which are the last words of `argv`;
/// `positionals` how many of them are the verb's own; `is_option` whether a word (`-p`,
/// `--checkpoint-interval`, `--state-backend=rocksdb`, `-Dk=v`) is one of the verb's options;
/// `rewrite_sae` whether the verb takes `--shutdown-on-attached-exit`.
pub fn reparse(
    argv: &[String],
    values: &[String],
    positionals: usize,
    is_option: impl Fn(&str) -> bool,
    rewrite_sae: bool,
) -> Option<Vec<String>> {
    if values.len() > argv.len() || argv[argv.len() - values.len()..] != *values || values.len() < positionals {
        return None;
    }
    let tail = argv.len() - values.len();
    let mut head: Vec<String> = argv[..tail].to_vec();
    let mut changed = false;
    if rewrite_sae && let Some(word) = head.iter_mut().find(|w| *w == SAE) {
        SHUTDOWN_ON_ATTACHED_EXIT.clone_into(word);
        changed = true;
    }
    let (positional, rest) = values.split_at(positionals);
    // `weir run -- job.so ...` (head ends with `--`) and `weir run job.so -- ...` leave every
    // word after the plugin to the job.
    let escaped = head.last().is_some_and(|w| w == "--") || rest.first().is_some_and(|w| w == "--");
    if !escaped && let Some(split) = rest.iter().position(|a| a == "--") {
        let before = &rest[..split];
        let mut options = before.iter().filter(|w| looks_like_option(w)).peekable();
        if options.peek().is_some() && options.all(|w| is_option(w)) {
            // The older form: weir's options go before the positionals, and the `--` after
            // them keeps what follows for the job.
            head.extend_from_slice(before);
            head.extend_from_slice(positional);
            head.extend_from_slice(&rest[split..]);
            return Some(head);
        }
    }
    changed.then(|| {
        head.extend_from_slice(values);
        head
    })
}

/// Whether `word` has the form of an option (`-x`, `--name`), not of a value such as `-1`.
fn looks_like_option(word: &str) -> bool {
    let mut chars = word.chars();
    chars.next() == Some('-') && chars.next().is_some_and(|c| c == '-' || c.is_ascii_alphabetic())
}

/// Whether `word` names one of `longs` (`--name` or `--name=value`) or `shorts` (`-x`, `-xVALUE`
/// for an option with a value, `-xyz` for flags).
pub fn names_an_option(word: &str, longs: &[String], shorts: &[char]) -> bool {
    if let Some(long) = word.strip_prefix("--") {
        let name = long.split_once('=').map_or(long, |(name, _)| name);
        return longs.iter().any(|l| l == name);
    }
    word.strip_prefix('-').and_then(|s| s.chars().next()).is_some_and(|c| shorts.contains(&c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_owned).collect()
    }

    fn is_option(word: &str) -> bool {
        let longs: Vec<String> = ["parallelism", "checkpoint-interval", "detached", "json"].map(String::from).to_vec();
        names_an_option(word, &longs, &['p', 'd', 'D', 's', 'n'])
    }

    fn reparsed(argv: &str, positionals: usize, sae: bool) -> Option<String> {
        let argv = words(argv);
        // What clap collects: everything from the first positional on.
        let verb = argv.iter().position(|w| w.ends_with(".so")).expect("a plugin");
        reparse(&argv, &argv[verb..], positionals, is_option, sae).map(|v| v.join(" "))
    }

    #[test]
    fn the_older_form_moves_weirs_options_before_the_plugin() {
        assert_eq!(
            reparsed("weir run job.so -p 4 --checkpoint-interval 1s -- --input x", 1, false).as_deref(),
            Some("weir run -p 4 --checkpoint-interval 1s job.so -- --input x")
        );
        assert_eq!(
            reparsed("weir -m jm:1 run job.so --detached -Dk=v -- a -- b", 1, false).as_deref(),
            Some("weir -m jm:1 run --detached -Dk=v job.so -- a -- b")
        );
        // savepoint check PLUGIN PATH -p 2 -- ARGS: the options go before both positionals.
        assert_eq!(
            reparsed("weir savepoint check job.so /sp -p 2 -- --q x", 2, false).as_deref(),
            Some("weir savepoint check -p 2 job.so /sp -- --q x")
        );
    }

    #[test]
    fn job_arguments_after_the_plugin_stay_the_jobs() {
        // The new form: nothing to do.
        assert_eq!(reparsed("weir run job.so --input x -p 4", 1, false), None);
        // `--` right after the plugin: everything after it is the job's, later `--` included.
        assert_eq!(reparsed("weir run job.so -- -p 4 -- x", 1, false), None);
        // Unknown options before `--`: they are the job's, and so is `--`.
        assert_eq!(reparsed("weir run job.so --input x -- --raw", 1, false), None);
        assert_eq!(reparsed("weir run job.so -p 2 --input x -- y", 1, false), None);
        // No options at all before `--`.
        assert_eq!(reparsed("weir run job.so input -- x", 1, false), None);
        // No job arguments.
        assert_eq!(reparsed("weir run job.so", 1, false), None);
        assert_eq!(reparsed("weir run -- job.so -p 2 -- x", 1, false), None);
    }

    #[test]
    fn a_separator_right_after_the_positionals_is_dropped() {
        let values = words("job.so -- --input x -- y");
        let (positional, job_args) = split_values(&values, 1);
        assert_eq!((positional, job_args), (&values[..1], &values[2..]));
        let values = words("job.so /sp --input x");
        assert_eq!(split_values(&values, 2), (&values[..2], &values[2..]));
        assert_eq!(split_values(&values[..1], 2), (&values[..1], &values[1..1]));
    }

    #[test]
    fn sae_is_rewritten_before_the_plugin_only() {
        assert_eq!(
            reparsed("weir run -sae job.so --input x", 1, true).as_deref(),
            Some("weir run --shutdown-on-attached-exit job.so --input x")
        );
        assert_eq!(reparsed("weir run job.so -sae", 1, true), None);
        assert_eq!(reparsed("weir local run -sae job.so", 1, false), None);
        assert_eq!(
            reparsed("weir run -sae job.so -p 2 -- x", 1, true).as_deref(),
            Some("weir run --shutdown-on-attached-exit -p 2 job.so -- x")
        );
    }

    #[test]
    fn options_are_recognised_by_name() {
        for word in ["-p", "-p4", "--parallelism", "--parallelism=4", "-Dexecution.checkpointing.interval=1s", "-d"] {
            assert!(is_option(word), "{word}");
        }
        for word in ["--input", "-x", "--par", "input", "-"] {
            assert!(!is_option(word), "{word}");
        }
        assert!(!looks_like_option("-1") && looks_like_option("-p") && looks_like_option("--x"));
    }
}
