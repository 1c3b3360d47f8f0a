//! Enrichment of a stream with a table kept from a changelog (the Kafka Streams KStream–KTable
//! join): clicks joined with user profiles.
//!
//! ```text
//! weir run libweir_example_enrichment.so -- --bootstrap-servers B --profiles-topic profiles
//!     --clicks-topic clicks --output-topic enriched-clicks [--join versioned|latest]
//!     [--bounded] ...
//! ```
//!
//! The profiles topic is a changelog (a compacted topic): the record key is the user id, the
//! value a JSON profile `{"name", "tier"}`, or no value (a tombstone) when the user is deleted.
//! Clicks are JSON `{"user", "page"}`. Each click goes out, exactly once, as
//! `{"user", "page", "name", "tier"}` with the profile of its user (`null`s without one: a left
//! join). With `--join versioned` (the default) the profile is the one valid at the click's
//! time (record timestamps), so the result does not depend on which topic is read first;
//! `--join latest` takes the profile as it is when the click is processed, as Kafka Streams
//! does with a plain KTable.

use serde::{Deserialize, Serialize};
use weir_api::prelude::*;
use weir_example_support as support;

/// A user's profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// Display name.
    pub name: String,
    /// Customer tier.
    pub tier: String,
}

/// A click.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Click {
    /// Who clicked.
    pub user: String,
    /// Where.
    pub page: String,
}

/// A click with its user's profile.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnrichedClick {
    /// Who clicked.
    pub user: String,
    /// Where.
    pub page: String,
    /// The user's name, if the user has a profile.
    pub name: Option<String>,
    /// The user's tier, if the user has a profile.
    pub tier: Option<String>,
}

/// A profile change from its Kafka record: key = user, value = profile or a tombstone.
fn profile_change(record: &KafkaRecord<'_>) -> std::result::Result<(String, Option<Profile>), String> {
    let user = record.key().ok_or("a profile record without a key (the user id)")?;
    let user = std::str::from_utf8(user).map_err(|e| format!("the user id is not UTF-8: {e}"))?.to_owned();
    let profile = match record.value() {
        None => None,
        Some(value) => Some(serde_json::from_slice(value).map_err(|e| format!("not a profile: {e}"))?),
    };
    Ok((user, profile))
}

fn build(env: &mut StreamExecutionEnvironment, args: &JobArgs) -> Result<()> {
    env.set_job_name("enrichment");
    let versioned = match support::value(args, "join")? {
        None | Some("versioned") => true,
        Some("latest") => false,
        Some(other) => {
            return Err(Error::InvalidArgument(format!("unknown --join {other:?}: expected versioned or latest")));
        }
    };
    let profiles = env
        .from_kafka(
            support::source(args, "profiles-topic", KafkaDeserializer::from_fn(profile_change))?,
            support::watermarks(args)?,
        )
        .uid("profiles")
        .name("profiles");
    let clicks = env
        .from_kafka(
            support::source(args, "clicks-topic", KafkaDeserializer::<Click>::json())?,
            support::watermarks(args)?,
        )
        .uid("clicks")
        .name("clicks");
    let mut join = clicks.key_by(|c: &Click| c.user.clone()).join_table(&profiles);
    if versioned {
        join = join.versioned();
    }
    join.left(|click: Click, profile: Option<Profile>| EnrichedClick {
        user: click.user,
        page: click.page,
        name: profile.as_ref().map(|p| p.name.clone()),
        tier: profile.map(|p| p.tier),
    })
    .uid("enrich")
    .name("enrich")
    .sink_to_kafka(support::sink(args, "enrichment", "output-topic", KafkaSerializer::json())?)
    .uid("enriched-clicks")
    .name("enriched clicks");
    Ok(())
}

weir_api::export_job!(build);
