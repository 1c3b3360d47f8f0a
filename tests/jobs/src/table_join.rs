//! `--job table-join`: a versioned stream–table join whose table and stream both come from one
//! throttled generator, so that its output is known whatever fails.
//!
//! Record `seq` (event time `seq` ms) is a change of the user table when `seq % 5 == 0`: user
//! `(seq / 5) % U` gets the row `seq`, or is deleted when `seq % 45 == 0`; every other record is
//! a click of user `seq % U`. Each click is joined (left, versioned) with its user's row valid
//! at its time and written as `click,row` (`-` without a row) to text files, exactly once.

use std::time::Duration;
use weir_api::prelude::*;

/// What record `seq` is: `Ok((user, row))` for a change, `Err(user)` for a click.
fn classify(seq: u64, users: u64) -> Result<(u64, Option<u64>), u64> {
    if seq.is_multiple_of(5) {
        Ok(((seq / 5) % users, (!seq.is_multiple_of(45)).then_some(seq)))
    } else {
        Err(seq % users)
    }
}

pub fn table_join(env: &mut StreamExecutionEnvironment, args: &JobArgs) -> Result<()> {
    let events: u64 = args.parse_required("events")?;
    let rate: f64 = args.parse_required("rate")?;
    let users: u64 = args.parse_required("users")?;
    if users == 0 || !(rate > 0.0 && rate.is_finite()) {
        return Err(Error::InvalidArgument("--users and --rate must be positive".into()));
    }
    env.set_job_name("test table-join");
    let records = env
        .from_generator(GeneratorSource::bounded(events).with_rate(rate), |seq| seq)
        .uid("numbers")
        .assign_timestamps_and_watermarks(
            WatermarkStrategy::for_bounded_out_of_orderness(Duration::ZERO)
                .with_timestamp_assigner(|&seq: &u64, _| seq as i64),
        )
        .uid("timestamps");
    let changes = records
        .flat_map(move |seq: u64, out: &mut Collector<'_, (u64, Option<u64>)>| {
            if let Ok(change) = classify(seq, users) {
                out.collect(change);
            }
        })
        .uid("changes");
    let clicks = records
        .flat_map(move |seq: u64, out: &mut Collector<'_, (u64, u64)>| {
            if let Err(user) = classify(seq, users) {
                out.collect((user, seq));
            }
        })
        .uid("clicks");
    clicks
        .key_by(|c: &(u64, u64)| c.0)
        .join_table(&changes)
        .versioned()
        .left(|c: (u64, u64), row: Option<u64>| format!("{},{}", c.1, row.map_or("-".to_owned(), |r| r.to_string())))
        .uid("enrich")
        .write_as_text(args.required("output")?)
        .uid("sink");
    Ok(())
}
