//! Runtimes of their own, on threads of their own at a lower CPU priority,
//! for work that must never delay an answer: the control server and the
//! health checks. The DNS workers (the UDP fast-path threads and the
//! daemon's runtime) keep the process's niceness; Linux applies niceness
//! per thread.

use thread_priority::ThreadPriorityValue;
use tracing::warn;

/// How much nicer than the process a background thread is: 10 steps, so
/// that under contention the scheduler gives a DNS worker about ten times
/// its share of a core and wakes the worker ahead of it; yet it still
/// progresses on a saturated machine, which health checks need: a checker
/// starved of CPU would see timeouts of its own making and take healthy
/// endpoints down.
pub const BACKGROUND_NICENESS_STEP: i32 = 10;

/// The highest niceness Linux has (the lowest priority).
const NICENESS_LOWEST: i32 = 19;

/// Gives the calling thread the background priority: the process's
/// niceness plus [`BACKGROUND_NICENESS_STEP`] (at most 19), whatever the
/// thread had. Logs (does not fail) if it cannot: the work still runs, at
/// the process's priority.
pub fn lower_priority() {
    let result = niceness_of("/proc/self/stat")
        .map(|base| (base + BACKGROUND_NICENESS_STEP).min(NICENESS_LOWEST))
        .and_then(set_niceness);
    if let Err(error) = result {
        let thread = std::thread::current();
        let thread = thread.name().unwrap_or("unnamed");
        warn!(%error, thread, "cannot lower a background thread's CPU priority");
    }
}

/// A single-threaded runtime whose blocking pool runs at the background
/// priority, in threads named `<name>-blocking`: the caller drives it from
/// a thread it names `name` and lowers with [`lower_priority`].
pub fn runtime(name: &str) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name(format!("{name}-blocking"))
        .on_thread_start(lower_priority)
        .build()
}

/// The niceness in a `/proc/.../stat` file: field 19, counted from the
/// first; the second (the command name in parentheses) may hold spaces.
fn niceness_of(stat: &str) -> Result<i32, String> {
    let text = std::fs::read_to_string(stat).map_err(|e| format!("cannot read {stat}: {e}"))?;
    parse_niceness(&text).ok_or_else(|| format!("no niceness in {stat}: {text:?}"))
}

fn parse_niceness(stat: &str) -> Option<i32> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19 - 3)?.parse().ok()
}

/// Sets the calling thread's niceness to `target` (0..=19 without
/// privileges, as long as it is not below the thread's own).
fn set_niceness(target: i32) -> Result<(), String> {
    use thread_priority::{ThreadPriority, set_current_thread_priority};
    // thread-priority takes 0..=99 and maps it onto the niceness range;
    // the value that lands on `target`:
    let value = (ThreadPriorityValue::MIN..=ThreadPriorityValue::MAX)
        .find(|v| crossplatform_niceness(*v) == target)
        .ok_or_else(|| format!("no priority value for niceness {target}"))?;
    let value = ThreadPriorityValue::try_from(value).map_err(|e| e.to_string())?;
    set_current_thread_priority(ThreadPriority::Crossplatform(value)).map_err(|e| e.to_string())
}

/// The niceness thread-priority 1.x gives `ThreadPriority::Crossplatform(v)`
/// under the normal policy: 0..=99 onto 19..=-20, rounded down as it does.
fn crossplatform_niceness(v: u8) -> i32 {
    let ratio = 1f32 - f32::from(v) / f32::from(ThreadPriorityValue::MAX);
    (39f32 * ratio) as i32 - 20
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_niceness_has_a_priority_value() {
        // As thread-priority documents it: 0 is niceness 19, 99 is -20.
        assert_eq!(crossplatform_niceness(0), 19);
        assert_eq!(crossplatform_niceness(99), -20);
        assert_eq!(crossplatform_niceness(22), 10);
        for n in -20..=19 {
            assert!(
                (0..=99).any(|v| crossplatform_niceness(v) == n),
                "niceness {n}"
            );
        }
    }

    #[test]
    fn niceness_is_read_past_a_command_name_with_spaces() {
        let stat = "4242 (a b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 5 3 0 0 20 10 9 0 12345";
        assert_eq!(parse_niceness(stat), Some(10));
        assert_eq!(parse_niceness("4242 (x) S 1"), None);
        let own = niceness_of("/proc/self/stat");
        assert!(own.is_ok_and(|n| (-20..=19).contains(&n)));
    }
}
