//! What `serve` asks of the polling thread between pipeline epochs, as
//! messages that carry their own reply channel. Requests travel on a
//! bounded channel the poller drains between polls; replies never share
//! the data channel.

use std::collections::BTreeMap;
use std::sync::mpsc::{self, Receiver, SyncSender};

use thiserror::Error;

/// Where an epoch starts reading a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// This offset (a snapshot's).
    Offset(i64),
    /// The group's committed offset (the log start without one).
    Committed,
    /// The first record with a timestamp at or after this (ms), but no
    /// later than the committed offset: a rewind.
    Time(i64),
}

/// What a halted consumer owns and has committed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HaltInfo {
    /// Assigned pipeline input partitions.
    pub assigned: Vec<u32>,
    /// Per assigned input partition: what the group committed for it.
    pub committed: Vec<Committed>,
}

/// One input partition's commit, as read back from the group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Committed {
    /// The pipeline input partition.
    pub partition: u32,
    /// The committed offset (the next record to read), if any.
    pub offset: Option<i64>,
    /// The durable tick that commit covered (its `durable_tick=K`
    /// metadata), if any.
    pub durable_tick: Option<i64>,
}

impl Committed {
    pub fn new(partition: u32, offset: Option<i64>, durable_tick: Option<i64>) -> Self {
        Self {
            partition,
            offset,
            durable_tick,
        }
    }
}

/// Where an epoch starts one pipeline input partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartOffset {
    /// The pipeline input partition.
    pub partition: u32,
    /// The next offset it delivers.
    pub offset: i64,
}

/// Reply to [`Request::Resume`].
#[derive(Debug)]
pub enum Resumed {
    /// Reading from these offsets.
    Started(Vec<StartOffset>),
    /// The assignment changed while halted: plan again for this one (the
    /// consumer stays halted).
    Replan(HaltInfo),
}

/// A request the poller cannot carry out.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ControlError {
    #[error("resume without a halt before it")]
    NotHalted,
}

/// One request to the polling thread, with the reply channel its answer
/// goes to (capacity 1: exactly one answer per request, sent without
/// blocking the poller).
#[derive(Debug)]
pub enum Request {
    /// Stop delivering records (records fetched for the old epoch are
    /// dropped, partitions paused). Reply: what this instance owns and has
    /// committed.
    Halt(SyncSender<HaltInfo>),
    /// Seek every assigned partition to its start (`Committed` for those
    /// not listed) and deliver records again. Reply: the start offsets, a
    /// re-plan when the assignment changed since the halt, or
    /// [`ControlError::NotHalted`].
    Resume {
        positions: BTreeMap<u32, StartAt>,
        reply: SyncSender<Result<Resumed, ControlError>>,
    },
}

impl Request {
    /// A halt request and the receiver of its reply.
    pub fn halt() -> (Self, Receiver<HaltInfo>) {
        let (tx, rx) = mpsc::sync_channel(1);
        (Self::Halt(tx), rx)
    }

    /// A resume request and the receiver of its reply.
    pub fn resume(
        positions: BTreeMap<u32, StartAt>,
    ) -> (Self, Receiver<Result<Resumed, ControlError>>) {
        let (reply, rx) = mpsc::sync_channel(1);
        (Self::Resume { positions, reply }, rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_request_gets_its_own_reply() {
        let (req, rx) = Request::halt();
        let Request::Halt(reply) = req else {
            panic!("not a halt")
        };
        let info = HaltInfo {
            assigned: vec![1],
            committed: vec![Committed::new(1, Some(4), None)],
        };
        reply.try_send(info.clone()).unwrap();
        assert_eq!(rx.recv().unwrap(), info);

        let (req, rx) = Request::resume(BTreeMap::from([(1, StartAt::Offset(7))]));
        let Request::Resume { positions, reply } = req else {
            panic!("not a resume")
        };
        assert_eq!(positions.get(&1), Some(&StartAt::Offset(7)));
        reply.try_send(Err(ControlError::NotHalted)).unwrap();
        assert_eq!(rx.recv().unwrap().unwrap_err(), ControlError::NotHalted);
    }
}
