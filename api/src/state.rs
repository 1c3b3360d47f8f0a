//! Keyed state: value, list and map state scoped to the current key, with optional time-to-live.
//!
//! State lives in the taskmanager's state backend as bytes addressed by key group, key and
//! namespace; these handles encode and decode it. Values are encoded self-describingly
//! (MessagePack with field names), so that state written by one version of a type is read by a
//! later, compatible one: fields added as `Option` or with `#[serde(default)]` take their
//! default, fields renamed with `#[serde(alias = "old")]` keep their values, removed fields are
//! ignored; `weir savepoint check` tries the new types on a savepoint's values before a job is
//! stopped. Keys (and map keys) keep a compact positional encoding: they must not change. Declare
//! descriptors as constants:
//!
//! ```
//! use weir_api::state::{StateTtlConfig, ValueStateDescriptor};
//! use std::time::Duration;
//! const COUNT: ValueStateDescriptor<u64> = ValueStateDescriptor::new("count");
//! const SEEN: ValueStateDescriptor<bool> =
//!     ValueStateDescriptor::new("seen").with_ttl(StateTtlConfig::new(Duration::from_secs(60)));
//! ```

use crate::codec::{decode, decode_state_value, encode_into, encode_state_value};
use crate::error::{Error, Result};
use crate::runtime::{KeyedStateBackend, StateId, StateKey, StateKind, list_elements};
use crate::time::Timestamp;
use std::marker::PhantomData;
use std::time::Duration;

/// When the time-to-live of a state entry restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TtlUpdateType {
    /// On creation and on every write (the default).
    OnCreateAndWrite,
    /// On creation, every write and every read.
    OnReadAndWrite,
}

/// Time-to-live of keyed state entries, in processing time. Expired entries are never returned
/// and are removed when next accessed; entries of keys that are never accessed again are removed
/// by a cleanup that runs, at most once per time-to-live (between 1 s and 60 s), when a
/// checkpoint is taken and in the background.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateTtlConfig {
    pub(crate) ttl_ms: i64,
    pub(crate) update: TtlUpdateType,
}

impl StateTtlConfig {
    /// Entries expire `ttl` after their last write.
    pub const fn new(ttl: Duration) -> Self {
        Self { ttl_ms: ttl.as_millis() as i64, update: TtlUpdateType::OnCreateAndWrite }
    }

    /// Sets when the time-to-live restarts.
    pub const fn update_type(mut self, update: TtlUpdateType) -> Self {
        self.update = update;
        self
    }
}

macro_rules! descriptor {
    ($(#[$doc:meta])* $name:ident < $($param:ident),+ >) => {
        $(#[$doc])*
        pub struct $name<$($param),+> {
            pub(crate) name: &'static str,
            pub(crate) ttl: Option<StateTtlConfig>,
            /// State of a built-in operator: values in the compact positional encoding (they
            /// do not evolve on their own; see the module documentation).
            pub(crate) internal: bool,
            _types: PhantomData<fn() -> ($($param,)+)>,
        }

        impl<$($param),+> $name<$($param),+> {
            /// A state named `name`, unique within its operator.
            pub const fn new(name: &'static str) -> Self {
                Self { name, ttl: None, internal: false, _types: PhantomData }
            }

            /// The state of a built-in operator (positional encoding).
            #[allow(dead_code)]
            pub(crate) const fn internal(mut self) -> Self {
                self.internal = true;
                self
            }

            /// Gives entries a time-to-live.
            pub const fn with_ttl(mut self, ttl: StateTtlConfig) -> Self {
                self.ttl = Some(ttl);
                self
            }

            /// The state's name.
            pub const fn name(&self) -> &'static str {
                self.name
            }
        }
    };
}

/// A keyed state a function declares ([`KeyedProcessFunction::states`]): its name, kind and
/// value type (the operator adds its key type).
///
/// [`KeyedProcessFunction::states`]: crate::functions::KeyedProcessFunction::states
#[derive(Debug, Clone)]
pub struct DeclaredState {
    pub(crate) name: &'static str,
    pub(crate) kind: &'static str,
    pub(crate) value_type: String,
    /// Reads one stored value (a canonical entry's value) as the declared type, for `weir
    /// savepoint check`; `None` for states of built-in operators.
    pub(crate) check: Option<StateCheck>,
}

/// Tries to read one stored value of a state as its declared type.
pub(crate) type StateCheck = fn(&[u8]) -> Result<()>;

/// A stored value of user state (after its write time when `TTL`) read as a `V`.
fn check_value<V: crate::Data, const TTL: bool>(stored: &[u8]) -> Result<()> {
    let payload = if TTL {
        stored.get(8..).ok_or_else(|| Error::serialization("deserialize", "state", "shorter than its TTL stamp"))?
    } else {
        stored
    };
    decode_state_value::<V>(payload, std::any::type_name::<V>()).map(|_| ())
}

/// Every element of a stored list of user state read as a `V`.
fn check_list<V: crate::Data, const TTL: bool>(stored: &[u8]) -> Result<()> {
    list_elements(stored).try_for_each(|element| check_value::<V, TTL>(element?))
}

/// A stored value of a built-in operator's state read as a `V` (positional encoding).
fn check_internal<V: crate::Data>(stored: &[u8]) -> Result<()> {
    decode::<V>(stored, std::any::type_name::<V>()).map(|_| ())
}

fn value_check<V: crate::Data>(ttl: Option<StateTtlConfig>, internal: bool) -> StateCheck {
    match (internal, ttl.is_some()) {
        (true, _) => check_internal::<V>,
        (false, true) => check_value::<V, true>,
        (false, false) => check_value::<V, false>,
    }
}

impl DeclaredState {
    /// The declaration with `K` as the operator's key type.
    pub(crate) fn with_key<K>(&self) -> crate::graph::StateDeclaration {
        crate::graph::StateDeclaration {
            name: self.name.to_owned(),
            kind: self.kind.to_owned(),
            key_type: std::any::type_name::<K>().to_owned(),
            value_type: self.value_type.clone(),
        }
    }
}

impl<V: crate::Data> ValueStateDescriptor<V> {
    /// This state's declaration.
    pub fn declared(&self) -> DeclaredState {
        DeclaredState {
            name: self.name,
            kind: "value",
            value_type: std::any::type_name::<V>().to_owned(),
            check: Some(value_check::<V>(self.ttl, self.internal)),
        }
    }
}

impl<V: crate::Data> ListStateDescriptor<V> {
    /// This state's declaration.
    pub fn declared(&self) -> DeclaredState {
        let check: StateCheck = if self.ttl.is_some() { check_list::<V, true> } else { check_list::<V, false> };
        DeclaredState {
            name: self.name,
            kind: "list",
            value_type: std::any::type_name::<V>().to_owned(),
            check: Some(check),
        }
    }
}

impl<K, V: crate::Data> MapStateDescriptor<K, V> {
    /// This state's declaration.
    pub fn declared(&self) -> DeclaredState {
        let value_type = format!("{} -> {}", std::any::type_name::<K>(), std::any::type_name::<V>());
        DeclaredState {
            name: self.name,
            kind: "map",
            value_type,
            check: Some(value_check::<V>(self.ttl, self.internal)),
        }
    }
}

descriptor!(
    /// Describes a [`ValueState`].
    ValueStateDescriptor<V>
);
descriptor!(
    /// Describes a [`ListState`].
    ListStateDescriptor<V>
);
descriptor!(
    /// Describes a [`MapState`].
    MapStateDescriptor<K, V>
);

/// The state names an operator registered with its backend.
#[derive(Default)]
pub(crate) struct StateRegistry {
    entries: Vec<(&'static str, StateKind, StateId)>,
    /// The states with a time-to-live: id, kind and time-to-live (ms).
    pub(crate) ttls: Vec<(StateId, StateKind, i64)>,
}

impl StateRegistry {
    pub(crate) fn id(
        &mut self,
        backend: &mut dyn KeyedStateBackend,
        name: &'static str,
        kind: StateKind,
    ) -> Result<StateId> {
        if let Some((_, registered, id)) = self.entries.iter().find(|(n, _, _)| *n == name) {
            if *registered != kind {
                return Err(Error::InvalidJob(format!(
                    "state '{name}' is used as {kind:?} state but was registered as {registered:?} state"
                )));
            }
            return Ok(*id);
        }
        let id = backend.register_state(name, kind)?;
        self.entries.push((name, kind, id));
        Ok(id)
    }

    /// [`StateRegistry::id`] of a state with time-to-live `ttl`, which expired entries are
    /// cleaned from ([`KeyedStateBackend::remove_expired`]).
    fn id_with_ttl(
        &mut self,
        backend: &mut dyn KeyedStateBackend,
        name: &'static str,
        kind: StateKind,
        ttl: Option<StateTtlConfig>,
    ) -> Result<StateId> {
        let id = self.id(backend, name, kind)?;
        if let Some(ttl) = ttl
            && !self.ttls.iter().any(|(t, _, _)| *t == id)
        {
            self.ttls.push((id, kind, ttl.ttl_ms));
        }
        Ok(id)
    }
}

/// Access to the keyed state of the current key (and namespace).
pub(crate) struct KeyedState<'a> {
    pub(crate) backend: &'a mut dyn KeyedStateBackend,
    pub(crate) registry: &'a mut StateRegistry,
    pub(crate) key: StateKey<'a>,
    pub(crate) now: Timestamp,
}

impl<'a> KeyedState<'a> {
    /// The cell of state `name` (registered as `kind` with `ttl` on first use) for the current
    /// key.
    fn cell(
        &mut self,
        (name, kind): (&'static str, StateKind),
        ttl: Option<StateTtlConfig>,
        internal: bool,
    ) -> Result<Cell<'_>> {
        let id = self.registry.id_with_ttl(self.backend, name, kind, ttl)?;
        Ok(Cell { backend: &mut *self.backend, id, key: self.key, ttl, now: self.now, name, internal })
    }

    pub(crate) fn value<V: crate::Data>(&mut self, d: &ValueStateDescriptor<V>) -> Result<ValueState<'_, V>> {
        Ok(ValueState { cell: self.cell((d.name, StateKind::Value), d.ttl, d.internal)?, _v: PhantomData })
    }

    pub(crate) fn list<V: crate::Data>(&mut self, d: &ListStateDescriptor<V>) -> Result<ListState<'_, V>> {
        let cell = self.cell((d.name, StateKind::List), d.ttl, d.internal)?;
        Ok(ListState { cell, scratch: Vec::new(), _v: PhantomData })
    }

    pub(crate) fn map<K: crate::Data, V: crate::Data>(
        &mut self,
        d: &MapStateDescriptor<K, V>,
    ) -> Result<MapState<'_, K, V>> {
        Ok(MapState { cell: self.cell((d.name, StateKind::Map), d.ttl, d.internal)?, _kv: PhantomData })
    }
}

/// One state of the current key, with its time-to-live.
struct Cell<'s> {
    backend: &'s mut dyn KeyedStateBackend,
    id: StateId,
    key: StateKey<'s>,
    ttl: Option<StateTtlConfig>,
    now: Timestamp,
    name: &'static str,
    /// Positional encoding (built-in operators' state).
    internal: bool,
}

impl Cell<'_> {
    /// Encodes `value`, prefixed with the write time when the state has a time-to-live.
    fn encode<V: serde::Serialize>(&self, value: &V, out: &mut Vec<u8>) -> Result<()> {
        if self.ttl.is_some() {
            out.extend_from_slice(&self.now.to_le_bytes());
        }
        if self.internal { encode_into(value, out, self.name) } else { encode_state_value(value, out, self.name) }
    }

    fn refresh_on_read(&self) -> bool {
        matches!(self.ttl, Some(StateTtlConfig { update: TtlUpdateType::OnReadAndWrite, .. }))
    }
}

/// Decodes a value of a state (positional when `internal`, see [`Cell::internal`]).
fn decode_cell<V: crate::Data>(internal: bool, name: &str, payload: &[u8]) -> Result<V> {
    if internal { decode(payload, name) } else { decode_state_value(payload, name) }
}

/// Splits stored bytes into (expired, payload) for a state with time-to-live `ttl` at `now`.
fn split_ttl<'b>(ttl: Option<StateTtlConfig>, now: Timestamp, name: &str, bytes: &'b [u8]) -> Result<(bool, &'b [u8])> {
    match ttl {
        None => Ok((false, bytes)),
        Some(ttl) => {
            let (stamp, payload) = bytes
                .split_first_chunk::<8>()
                .ok_or_else(|| Error::serialization("deserialize", name, "entry shorter than its TTL stamp"))?;
            let written = i64::from_le_bytes(*stamp);
            Ok((now.saturating_sub(written) >= ttl.ttl_ms, payload))
        }
    }
}

/// A single value per key (Flink's `ValueState`).
pub struct ValueState<'s, V> {
    cell: Cell<'s>,
    _v: PhantomData<fn() -> V>,
}

impl<V: crate::Data> ValueState<'_, V> {
    /// The current key's value; `None` when never set, cleared, or expired.
    pub fn value(&mut self) -> Result<Option<V>> {
        let cell = &mut self.cell;
        let Some(bytes) = cell.backend.get(cell.id, cell.key)? else {
            return Ok(None);
        };
        let (expired, payload) = split_ttl(cell.ttl, cell.now, cell.name, bytes)?;
        if expired {
            cell.backend.remove(cell.id, cell.key)?;
            return Ok(None);
        }
        let value: V = decode_cell(cell.internal, cell.name, payload)?;
        if cell.refresh_on_read() {
            self.update(&value)?;
        }
        Ok(Some(value))
    }

    /// Sets the current key's value.
    pub fn update(&mut self, value: &V) -> Result<()> {
        let mut bytes = Vec::new();
        self.cell.encode(value, &mut bytes)?;
        self.cell.backend.put(self.cell.id, self.cell.key, &bytes)
    }

    /// Removes the current key's value.
    pub fn clear(&mut self) -> Result<()> {
        self.cell.backend.remove(self.cell.id, self.cell.key)
    }
}

/// A list of values per key (Flink's `ListState`); with a time-to-live, each element expires on
/// its own.
pub struct ListState<'s, V> {
    cell: Cell<'s>,
    scratch: Vec<u8>,
    _v: PhantomData<fn() -> V>,
}

impl<V: crate::Data> ListState<'_, V> {
    /// The current key's elements in insertion order (empty when none).
    pub fn get(&mut self) -> Result<Vec<V>> {
        let cell = &mut self.cell;
        let Some(bytes) = cell.backend.get(cell.id, cell.key)? else {
            return Ok(Vec::new());
        };
        let mut values = Vec::new();
        let mut any_expired = false;
        for element in list_elements(bytes) {
            let (expired, payload) = split_ttl(cell.ttl, cell.now, cell.name, element?)?;
            if expired {
                any_expired = true;
            } else {
                values.push(decode_cell(cell.internal, cell.name, payload)?);
            }
        }
        if any_expired || (cell.refresh_on_read() && !values.is_empty()) {
            self.update(&values)?;
        }
        Ok(values)
    }

    /// Appends one element.
    pub fn add(&mut self, value: &V) -> Result<()> {
        self.scratch.clear();
        self.cell.encode(value, &mut self.scratch)?;
        self.cell.backend.append(self.cell.id, self.cell.key, &self.scratch)
    }

    /// Replaces all elements.
    pub fn update(&mut self, values: &[V]) -> Result<()> {
        self.cell.backend.remove(self.cell.id, self.cell.key)?;
        for value in values {
            self.add(value)?;
        }
        Ok(())
    }

    /// Removes all elements.
    pub fn clear(&mut self) -> Result<()> {
        self.cell.backend.remove(self.cell.id, self.cell.key)
    }
}

/// A map per key (Flink's `MapState`); with a time-to-live, each entry expires on its own.
pub struct MapState<'s, K, V> {
    cell: Cell<'s>,
    _kv: PhantomData<fn() -> (K, V)>,
}

impl<K: crate::Data, V: crate::Data> MapState<'_, K, V> {
    fn user_key(&self, key: &K) -> Result<Vec<u8>> {
        let mut bytes = Vec::new();
        encode_into(key, &mut bytes, self.cell.name)?;
        Ok(bytes)
    }

    /// The value of `key`, if present and not expired.
    pub fn get(&mut self, key: &K) -> Result<Option<V>> {
        let user_key = self.user_key(key)?;
        let cell = &mut self.cell;
        let Some(bytes) = cell.backend.map_get(cell.id, cell.key, &user_key)? else {
            return Ok(None);
        };
        let (expired, payload) = split_ttl(cell.ttl, cell.now, cell.name, bytes)?;
        if expired {
            cell.backend.map_remove(cell.id, cell.key, &user_key)?;
            return Ok(None);
        }
        let value: V = decode_cell(cell.internal, cell.name, payload)?;
        if cell.refresh_on_read() {
            self.put(key, &value)?;
        }
        Ok(Some(value))
    }

    /// Whether `key` is present (and not expired).
    pub fn contains(&mut self, key: &K) -> Result<bool> {
        Ok(self.get(key)?.is_some())
    }

    /// Sets `key` to `value`.
    pub fn put(&mut self, key: &K, value: &V) -> Result<()> {
        let user_key = self.user_key(key)?;
        let mut bytes = Vec::new();
        self.cell.encode(value, &mut bytes)?;
        self.cell.backend.map_put(self.cell.id, self.cell.key, &user_key, &bytes)
    }

    /// Removes `key`.
    pub fn remove(&mut self, key: &K) -> Result<()> {
        let user_key = self.user_key(key)?;
        self.cell.backend.map_remove(self.cell.id, self.cell.key, &user_key)
    }

    /// All live entries, in the order of their serialized keys.
    pub fn entries(&mut self) -> Result<Vec<(K, V)>> {
        let cell = &mut self.cell;
        let mut raw: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        cell.backend.map_scan(cell.id, cell.key, &mut |k, v| {
            raw.push((k.to_vec(), v.to_vec()));
            true
        })?;
        let mut entries = Vec::with_capacity(raw.len());
        for (k, v) in raw {
            let (expired, payload) = split_ttl(cell.ttl, cell.now, cell.name, &v)?;
            if expired {
                cell.backend.map_remove(cell.id, cell.key, &k)?;
            } else {
                entries.push((decode(&k, cell.name)?, decode_cell(cell.internal, cell.name, payload)?));
            }
        }
        Ok(entries)
    }

    /// The entries whose key `select` accepts, read in one scan that decodes only their values
    /// (for state without a time-to-live; expired entries of one are skipped, not removed).
    pub fn entries_where(&mut self, select: impl FnMut(&K) -> bool) -> Result<Vec<(K, V)>> {
        self.entries_in(None, select)
    }

    /// The live entries whose serialized keys lie from `from`'s (inclusive) to `to`'s
    /// (exclusive; `None`: to the end). Meaningful only for key types whose encoding sorts as
    /// the keys do (such as big-endian fixed-size bytes); the backend seeks to the start.
    pub(crate) fn entries_between(&mut self, from: &K, to: Option<&K>) -> Result<Vec<(K, V)>> {
        let from = self.user_key(from)?;
        let to = to.map(|to| self.user_key(to)).transpose()?;
        self.entries_in(Some((&from, to.as_deref())), |_| true)
    }

    /// The live entries in the user-key byte range `range` (all: `None`) that `select` keeps.
    fn entries_in(
        &mut self,
        range: Option<(&[u8], Option<&[u8]>)>,
        mut select: impl FnMut(&K) -> bool,
    ) -> Result<Vec<(K, V)>> {
        let cell = &mut self.cell;
        let (ttl, now, name, internal) = (cell.ttl, cell.now, cell.name, cell.internal);
        let mut entries = Vec::new();
        let mut failure = None;
        let mut visit = |k: &[u8], v: &[u8]| {
            let mut read = || -> Result<Option<(K, V)>> {
                let key: K = decode(k, name)?;
                if !select(&key) {
                    return Ok(None);
                }
                let (expired, payload) = split_ttl(ttl, now, name, v)?;
                if expired { Ok(None) } else { Ok(Some((key, decode_cell(internal, name, payload)?))) }
            };
            match read() {
                Ok(Some(entry)) => entries.push(entry),
                Ok(None) => {}
                Err(e) => {
                    failure = Some(e);
                    return false;
                }
            }
            true
        };
        match range {
            Some(range) => cell.backend.map_scan_range(cell.id, cell.key, range, &mut visit)?,
            None => cell.backend.map_scan(cell.id, cell.key, &mut visit)?,
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(entries),
        }
    }

    /// All live keys.
    pub fn keys(&mut self) -> Result<Vec<K>> {
        Ok(self.entries()?.into_iter().map(|(k, _)| k).collect())
    }

    /// Whether the map has no live entry.
    pub fn is_empty(&mut self) -> Result<bool> {
        Ok(self.entries()?.is_empty())
    }

    /// Removes every entry.
    pub fn clear(&mut self) -> Result<()> {
        self.cell.backend.remove(self.cell.id, self.cell.key)
    }
}

/// Describes a [`ReducingState`]: a value per key that every added element is reduced into with
/// `reduce` (Flink's `ReducingStateDescriptor`).
pub struct ReducingStateDescriptor<V> {
    pub(crate) name: &'static str,
    pub(crate) ttl: Option<StateTtlConfig>,
    pub(crate) reduce: fn(V, V) -> V,
}

impl<V> ReducingStateDescriptor<V> {
    /// A state named `name` reducing with `reduce` (a function or a closure that captures
    /// nothing: `|a, b| a + b`).
    pub const fn new(name: &'static str, reduce: fn(V, V) -> V) -> Self {
        Self { name, ttl: None, reduce }
    }

    /// Gives the value a time-to-live.
    pub const fn with_ttl(mut self, ttl: StateTtlConfig) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// This state's declaration.
    pub fn declared(&self) -> DeclaredState
    where
        V: crate::Data,
    {
        DeclaredState {
            name: self.name,
            kind: "reducing",
            value_type: std::any::type_name::<V>().to_owned(),
            check: Some(value_check::<V>(self.ttl, false)),
        }
    }

    fn value(&self) -> ValueStateDescriptor<V> {
        ValueStateDescriptor { name: self.name, ttl: self.ttl, internal: false, _types: PhantomData }
    }
}

/// A value per key that added elements are reduced into (Flink's `ReducingState`).
pub struct ReducingState<'s, V> {
    value: ValueState<'s, V>,
    reduce: fn(V, V) -> V,
}

impl<V: crate::Data> ReducingState<'_, V> {
    /// The reduction of the current key's elements; `None` when none was added (or it expired).
    pub fn get(&mut self) -> Result<Option<V>> {
        self.value.value()
    }

    /// Reduces `element` into the current key's value.
    pub fn add(&mut self, element: V) -> Result<()> {
        let reduced = match self.value.value()? {
            Some(current) => (self.reduce)(current, element),
            None => element,
        };
        self.value.update(&reduced)
    }

    /// Removes the current key's value.
    pub fn clear(&mut self) -> Result<()> {
        self.value.clear()
    }
}

/// Describes an [`AggregatingState`]: an accumulator per key that added elements are
/// aggregated into with an [`AggregateFunction`](crate::functions::AggregateFunction) (Flink's
/// `AggregatingStateDescriptor`).
pub struct AggregatingStateDescriptor<I: 'static, Acc: 'static, O: 'static> {
    pub(crate) name: &'static str,
    pub(crate) ttl: Option<StateTtlConfig>,
    pub(crate) function: &'static dyn crate::functions::AggregateFunction<I, Acc, O>,
}

impl<I, Acc, O> AggregatingStateDescriptor<I, Acc, O> {
    /// A state named `name` aggregating with `function` (`&MyAggregate`).
    pub const fn new(
        name: &'static str,
        function: &'static dyn crate::functions::AggregateFunction<I, Acc, O>,
    ) -> Self {
        Self { name, ttl: None, function }
    }

    /// Gives the accumulator a time-to-live.
    pub const fn with_ttl(mut self, ttl: StateTtlConfig) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// This state's declaration.
    pub fn declared(&self) -> DeclaredState
    where
        Acc: crate::Data,
    {
        DeclaredState {
            name: self.name,
            kind: "aggregating",
            value_type: std::any::type_name::<Acc>().to_owned(),
            check: Some(value_check::<Acc>(self.ttl, false)),
        }
    }

    fn accumulator(&self) -> ValueStateDescriptor<Acc> {
        ValueStateDescriptor { name: self.name, ttl: self.ttl, internal: false, _types: PhantomData }
    }
}

/// An accumulator per key that added elements are aggregated into (Flink's `AggregatingState`).
pub struct AggregatingState<'s, I: 'static, Acc: 'static, O: 'static> {
    accumulator: ValueState<'s, Acc>,
    function: &'static dyn crate::functions::AggregateFunction<I, Acc, O>,
}

impl<I, Acc: crate::Data, O> AggregatingState<'_, I, Acc, O> {
    /// The result of the current key's accumulator; `None` when nothing was added.
    pub fn get(&mut self) -> Result<Option<O>> {
        Ok(self.accumulator.value()?.map(|acc| self.function.get_result(acc)))
    }

    /// Aggregates `element` into the current key's accumulator.
    pub fn add(&mut self, element: I) -> Result<()> {
        let acc = self.accumulator.value()?.unwrap_or_else(|| self.function.create_accumulator());
        self.accumulator.update(&self.function.add(element, acc))
    }

    /// Removes the current key's accumulator.
    pub fn clear(&mut self) -> Result<()> {
        self.accumulator.clear()
    }
}

impl<'a> KeyedState<'a> {
    pub(crate) fn reducing<V: crate::Data>(&mut self, d: &ReducingStateDescriptor<V>) -> Result<ReducingState<'_, V>> {
        Ok(ReducingState { value: self.value(&d.value())?, reduce: d.reduce })
    }

    pub(crate) fn aggregating<I, Acc: crate::Data, O>(
        &mut self,
        d: &AggregatingStateDescriptor<I, Acc, O>,
    ) -> Result<AggregatingState<'_, I, Acc, O>> {
        Ok(AggregatingState { accumulator: self.value(&d.accumulator())?, function: d.function })
    }
}
