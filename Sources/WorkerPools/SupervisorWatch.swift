import Foundation

/// Lets a worker started by `jobfarm supervise` stop when its supervisor is gone.
///
/// The supervisor puts its pid in `JOBFARM_SUPERVISOR_PID` of each child's environment. A supervisor killed with
/// SIGKILL cannot pass a signal on, and Linux's parent-death signal (`PR_SET_PDEATHSIG`) follows the *thread* that
/// started the child (a Swift concurrency thread that may be retired), so the worker checks its parent itself: once
/// a second, and when it has been re-parented it sends itself SIGTERM — the ordinary graceful stop (running jobs
/// finish within the grace, the rest are handed back). Nothing is left running for a supervisor started again to
/// double.
public enum SupervisorWatch {
    /// The environment variable that carries the supervisor's pid.
    public static let variable = "JOBFARM_SUPERVISOR_PID"

    /// The environment for a child of this supervisor: the current one plus `JOBFARM_SUPERVISOR_PID`.
    public static func childEnvironment(_ base: [String: String] = ProcessInfo.processInfo.environment) -> [String: String] {
        var environment = base
        environment[variable] = String(getpid())
        return environment
    }

    /// Starts the check when this process was started by a supervisor (the variable set); returns whether it did.
    /// `onOrphaned` runs once when the supervisor is gone (the default sends this process SIGTERM).
    @discardableResult
    public static func startIfSupervised(
        environment: [String: String] = ProcessInfo.processInfo.environment,
        every interval: TimeInterval = 1,
        onOrphaned: @escaping @Sendable () -> Void = { kill(getpid(), SIGTERM) }
    ) -> Bool {
        guard let text = environment[variable], let supervisor = pid_t(text), supervisor > 1 else { return false }
        let thread = Thread {
            while getppid() == supervisor { Thread.sleep(forTimeInterval: interval) }
            onOrphaned()
        }
        thread.name = "jf.supervisor-watch"
        thread.start()
        return true
    }
}
