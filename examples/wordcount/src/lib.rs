//! Word count: counts the words of text files and writes `word<TAB>count` lines.
//!
//! ```text
//! weir run target/.../libweir_example_wordcount.so -- --input PATH --output DIR
//! ```
//!
//! A word is a maximal run of ASCII letters and digits, lowercased; every other character
//! (punctuation, whitespace, any non-ASCII character) separates words. Each distinct word is
//! written once, with its final count: the count lives in keyed state and is emitted by an
//! event-time timer at [`MAX_WATERMARK`], which fires when the bounded input ends.

use weir_api::prelude::*;

/// The running count of the current word.
const COUNT: ValueStateDescriptor<u64> = ValueStateDescriptor::new("count");

/// Calls `emit` with every word of `line`, lowercased; one allocation per word.
///
/// Word boundaries are found on bytes: a run of ASCII alphanumeric bytes starts and ends on char
/// boundaries (a multi-byte UTF-8 sequence never contains ASCII bytes), so the run is a valid
/// `str` slice.
fn for_each_word(line: &str, mut emit: impl FnMut(String)) {
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_alphanumeric() {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_alphanumeric() {
            i += 1;
        }
        emit(line[start..i].to_ascii_lowercase());
    }
}

/// Counts each word in keyed state and emits `word<TAB>count` once the input has ended.
#[derive(Clone)]
struct CountWords;

impl KeyedProcessFunction<String, (String, u64), String> for CountWords {
    fn process_element(&mut self, value: (String, u64), ctx: &mut KeyedContext<'_, String, String>) -> Result<()> {
        let mut state = ctx.value_state(&COUNT)?;
        let count = state.value()?;
        state.update(&(count.unwrap_or(0) + value.1))?;
        if count.is_none() {
            // First occurrence of the word: the final watermark fires this timer.
            ctx.timer_service().register_event_time_timer(MAX_WATERMARK);
        }
        Ok(())
    }

    fn on_timer(&mut self, _timestamp: Timestamp, ctx: &mut KeyedContext<'_, String, String>) -> Result<()> {
        let mut state = ctx.value_state(&COUNT)?;
        let count = state.value()?;
        state.clear()?;
        if let Some(count) = count {
            let line = format!("{}\t{count}", ctx.key());
            ctx.collect(line);
        }
        Ok(())
    }
}

/// Builds the word count job: `--input PATH --output DIR`.
fn build(env: &mut StreamExecutionEnvironment, args: &JobArgs) -> weir_api::Result<()> {
    let input = args.required("input")?;
    let output = args.required("output")?;
    env.set_job_name("wordcount");
    env.read_text_file(input)
        .uid("read-lines")
        .name("read lines")
        .flat_map(|line: String, out: &mut Collector<'_, (String, u64)>| {
            for_each_word(&line, |word| out.collect((word, 1)));
        })
        .uid("tokenize")
        .name("tokenize")
        .key_by(|(word, _): &(String, u64)| word.clone())
        .process(CountWords)
        .uid("count")
        .name("count")
        .write_as_text(output)
        .uid("write-counts")
        .name("write counts");
    Ok(())
}

weir_api::export_job!(build);

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<String> {
        let mut out = Vec::new();
        for_each_word(line, |w| out.push(w));
        out
    }

    #[test]
    fn splits_on_non_alphanumeric_ascii_and_non_ascii() {
        assert_eq!(words("Hello, World! hello"), ["hello", "world", "hello"]);
        assert_eq!(words("  a1b2--C3 "), ["a1b2", "c3"]);
        assert_eq!(words("naïve café x"), ["na", "ve", "caf", "x"]);
        assert!(words("").is_empty());
        assert!(words("...  ,;").is_empty());
        assert_eq!(words("end"), ["end"]);
    }

    fn build_with(args: &[&str]) -> weir_api::Result<()> {
        let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        weir_api::plugin::job_entry(build).build(&args).map(|_| ())
    }

    #[test]
    fn missing_arguments_are_invalid_arguments() {
        for (args, missing) in [(&["--input", "x"][..], "--output"), (&[][..], "--input")] {
            match build_with(args) {
                Err(weir_api::Error::InvalidArgument(m)) => assert!(m.contains(missing), "{m}"),
                other => panic!("{args:?}: expected a missing {missing}, got {:?}", other.err()),
            }
        }
        build_with(&["--input", "x", "--output", "y"]).unwrap();
    }
}
