import Foundation
import Logging
import UnixSignals

/// Runs a fixed number of worker processes per pool, restarts one that exits (with exponential back-off, logged
/// with its exit status), and stops them all on SIGTERM/SIGINT: SIGTERM to every child, then SIGKILL after
/// `stopTimeout` or at a second signal.
///
/// A worker given SIGTERM stops fetching, lets running jobs finish within its grace and hands the rest back to their
/// queue, so stopping the supervisor loses no job; a worker killed outright has its leases recovered by the others.
public struct PoolSupervisor: Sendable {
    /// One process place of a pool: `index` 1…count.
    public struct Slot: Hashable, Sendable, CustomStringConvertible {
        /// The pool's name.
        public var pool: String
        /// 1…the pool's process count.
        public var index: Int
        public var description: String { "\(pool)-\(index)" }
    }

    /// How children are started and stopped.
    public struct Configuration: Sendable {
        /// The program a child runs (the `jobfarm` binary).
        public var executable: String
        /// A child's arguments, for its slot and start count (1 for the first start, 2 after the first restart…).
        public var arguments: @Sendable (Slot, Int) -> [String]
        /// Process counts by pool, in start order.
        public var processes: [(pool: String, count: Int)]
        /// Where each child's output is appended (`worker-POOL-INDEX.log`); nil: the supervisor's own output.
        public var logDirectory: String?
        /// How long children get after SIGTERM before SIGKILL.
        public var stopTimeout: Duration = .seconds(30)
        /// The first restart delay; doubled for each exit in a row, up to `maximumRestartDelay`.
        public var restartDelay: Duration = .seconds(1)
        /// The longest restart delay.
        public var maximumRestartDelay: Duration = .seconds(30)
        /// A child that ran this long before exiting counts as healthy: its next restart waits `restartDelay` again.
        public var healthyAfter: Duration = .seconds(30)

        /// Children of `executable` with `arguments`, `processes` of them per pool.
        public init(executable: String, processes: [(pool: String, count: Int)], arguments: @escaping @Sendable (Slot, Int) -> [String]) {
            self.executable = executable
            self.processes = processes
            self.arguments = arguments
        }
    }

    let configuration: Configuration
    let logger: Logger

    /// A supervisor; nothing starts until `run()`.
    public init(configuration: Configuration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
    }

    /// The delay before the `failures`-th restart in a row.
    public static func restartDelay(failures: Int, base: Duration, maximum: Duration) -> Duration {
        var delay = base
        for _ in 1..<max(1, failures) {
            delay = delay * 2
            if delay >= maximum { return maximum }
        }
        return min(delay, maximum)
    }

    private enum Event: Sendable {
        case exited(Slot, pid: Int32, status: String, ranFor: Duration)
        case restart(Slot)
        case signal(UnixSignal)
        case stopTimeout
    }

    /// Starts every child and supervises them until a SIGTERM or SIGINT has stopped them all.
    public func run() async {
        let (events, continuation) = AsyncStream.makeStream(of: Event.self)
        let signals = await UnixSignalsSequence(trapping: .sigterm, .sigint)
        let signalTask = Task {
            for await signal in signals { continuation.yield(.signal(signal)) }
        }
        var timers: [Task<Void, Never>] = []
        defer {
            signalTask.cancel()
            for timer in timers { timer.cancel() }
        }
        var children: [Slot: Process] = [:]
        var starts: [Slot: Int] = [:]
        var failures: [Slot: Int] = [:]
        var stopping = false

        func start(_ slot: Slot) {
            starts[slot, default: 0] += 1
            let process = Process()
            process.executableURL = URL(fileURLWithPath: configuration.executable)
            process.arguments = configuration.arguments(slot, starts[slot]!)
            if let directory = configuration.logDirectory {
                let path = (directory as NSString).appendingPathComponent("worker-\(slot.pool)-\(slot.index).log")
                if !FileManager.default.fileExists(atPath: path) { _ = FileManager.default.createFile(atPath: path, contents: nil) }
                if let handle = FileHandle(forWritingAtPath: path) {
                    handle.seekToEndOfFile()
                    process.standardOutput = handle
                    process.standardError = handle
                }
            }
            let startedAt = ContinuousClock.now
            process.terminationHandler = { process in
                let status = process.terminationReason == .uncaughtSignal
                    ? "killed by signal \(process.terminationStatus)" : "exit status \(process.terminationStatus)"
                continuation.yield(.exited(slot, pid: process.processIdentifier, status: status, ranFor: ContinuousClock.now - startedAt))
            }
            do {
                try process.run()
                children[slot] = process
                logger.info("worker started", metadata: ["slot": "\(slot)", "pid": "\(process.processIdentifier)", "start": "\(starts[slot]!)"])
            } catch {
                continuation.yield(.exited(slot, pid: 0, status: "did not start: \(error)", ranFor: .zero))
            }
        }

        func signalAll(_ number: Int32) {
            for process in children.values where process.isRunning { kill(process.processIdentifier, number) }
        }

        for (pool, count) in configuration.processes {
            for index in 0..<count { start(Slot(pool: pool, index: index + 1)) }
        }
        if children.isEmpty && configuration.processes.allSatisfy({ $0.count == 0 }) {
            logger.notice("no pool has processes to run (every processes.min is 0); waiting for SIGTERM or SIGINT")
        }

        loop: for await event in events {
            switch event {
            case .exited(let slot, let pid, let status, let ranFor):
                children[slot] = nil
                if stopping {
                    logger.info("worker stopped", metadata: ["slot": "\(slot)", "pid": "\(pid)", "status": "\(status)", "left": "\(children.count)"])
                    if children.isEmpty { break loop }
                    continue
                }
                if ranFor >= configuration.healthyAfter { failures[slot] = 0 }
                failures[slot, default: 0] += 1
                let delay = Self.restartDelay(failures: failures[slot]!, base: configuration.restartDelay, maximum: configuration.maximumRestartDelay)
                logger.warning("worker exited; restarting it", metadata: [
                    "slot": "\(slot)", "pid": "\(pid)", "status": "\(status)", "ran_for": "\(ranFor)",
                    "exits_in_a_row": "\(failures[slot]!)", "restart_in": "\(delay)",
                ])
                timers.append(Task {
                    try? await Task.sleep(for: delay)
                    continuation.yield(.restart(slot))
                })
            case .restart(let slot):
                if !stopping && children[slot] == nil { start(slot) }
            case .signal(let signal):
                if !stopping {
                    stopping = true
                    logger.notice("stopping the workers (SIGTERM: running jobs finish, the rest go back to their queue)", metadata: [
                        "signal": "\(signal)", "workers": "\(children.count)", "kill_after": "\(configuration.stopTimeout)",
                    ])
                    if children.isEmpty { break loop }
                    signalAll(SIGTERM)
                    let timeout = configuration.stopTimeout
                    timers.append(Task {
                        try? await Task.sleep(for: timeout)
                        if !Task.isCancelled { continuation.yield(.stopTimeout) }
                    })
                } else {
                    logger.warning("second signal: killing the workers (SIGKILL); their jobs come back when their leases expire", metadata: [
                        "signal": "\(signal)", "workers": "\(children.count)",
                    ])
                    signalAll(SIGKILL)
                }
            case .stopTimeout:
                logger.warning("workers still running after the stop timeout: killing them (SIGKILL); their jobs come back when their leases expire", metadata: [
                    "workers": "\(children.count)", "timeout": "\(configuration.stopTimeout)",
                ])
                signalAll(SIGKILL)
            }
        }
        continuation.finish()
    }
}
