import Foundation
import Synchronization
import Logging
import UnixSignals

/// Runs worker processes per pool, restarts one that exits (with exponential back-off, logged with its exit status),
/// follows a scaler's counts when it has one (a process scaled in gets SIGTERM, then SIGKILL after `stopTimeout`),
/// and stops them all on SIGTERM/SIGINT: SIGTERM to every child, then SIGKILL after `stopTimeout` or at a second
/// signal.
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
        /// Asked every `scaleInterval` with the processes each pool runs (scaled-in ones still stopping not
        /// counted): the count each pool should run and why. Nil: the counts of `processes` stay.
        public var scaler: (@Sendable ([String: Int]) async -> [String: ScaleTarget])?
        /// How often `scaler` is asked.
        public var scaleInterval: Duration = .seconds(5)
        /// Called with the process slots (1-based indexes) each pool runs, at start and whenever they change (a
        /// scale-up, a scale-in, a slot given up): `jobfarm supervise` rewrites the Prometheus targets file here.
        /// Slots scaled in and still stopping are not listed; a crashed process waiting for its restart is.
        public var slotsChanged: (@Sendable ([String: [Int]]) -> Void)?

        /// Children of `executable` with `arguments`, `processes` of them per pool.
        public init(executable: String, processes: [(pool: String, count: Int)], arguments: @escaping @Sendable (Slot, Int) -> [String]) {
            self.executable = executable
            self.processes = processes
            self.arguments = arguments
        }
    }

    /// A pool's process count from a scaler, and why (logged when it changes).
    public struct ScaleTarget: Sendable, Equatable {
        /// The processes to run.
        public var count: Int
        /// Why (the policy's reason).
        public var reason: String

        /// `count` processes, because of `reason`.
        public init(count: Int, reason: String) {
            self.count = count
            self.reason = reason
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
        case scale([String: ScaleTarget])
        case retireTimeout(Slot, pid: Int32)
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
        // Scaling: the count each pool should run; children given SIGTERM to scale in; slots waiting to restart.
        var targets: [String: Int] = Dictionary(configuration.processes.map { ($0.pool, $0.count) }, uniquingKeysWith: { $1 })
        var retiring: Set<Slot> = []
        var pendingRestart: Set<Slot> = []
        let running = RunningCounts()

        func start(_ slot: Slot) {
            starts[slot, default: 0] += 1
            let process = Process()
            process.executableURL = URL(fileURLWithPath: configuration.executable)
            process.arguments = configuration.arguments(slot, starts[slot]!)
            // A worker that finds this supervisor gone (killed with SIGKILL) stops by itself (SupervisorWatch).
            process.environment = SupervisorWatch.childEnvironment()
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

        /// Processes a pool runs or is about to restart, not counting those scaled in.
        func active(_ pool: String) -> [Slot] {
            (Set(children.keys).subtracting(retiring).union(pendingRestart)).filter { $0.pool == pool }.sorted { $0.index < $1.index }
        }

        var publishedSlots: [String: [Int]]?
        func publishCounts() {
            let slots = Dictionary(uniqueKeysWithValues: targets.keys.map { pool in (pool, active(pool).map(\.index)) })
            running.set(slots.mapValues(\.count))
            if slots != publishedSlots {
                publishedSlots = slots
                configuration.slotsChanged?(slots)
            }
        }

        /// Starts or scales in processes of `pool` until it runs `count`.
        func scale(_ pool: String, to count: Int, reason: String) {
            var current = active(pool)
            guard current.count != count else { return }
            logger.notice("scaling pool \(pool) from \(current.count) to \(count) process(es)", metadata: ["pool": "\(pool)", "reason": "\(reason)"])
            while current.count < count {
                let taken = Set(children.keys).union(pendingRestart)
                var index = 1
                while taken.contains(Slot(pool: pool, index: index)) { index += 1 }
                let slot = Slot(pool: pool, index: index)
                failures[slot] = 0
                start(slot)
                if children[slot] == nil { pendingRestart.insert(slot) }
                current = active(pool)
            }
            while current.count > count, let slot = current.last {
                if pendingRestart.remove(slot) == nil, let process = children[slot] {
                    retiring.insert(slot)
                    let pid = process.processIdentifier
                    logger.info("scaling in: SIGTERM (stop fetching, finish or hand back its jobs)", metadata: ["slot": "\(slot)", "pid": "\(pid)"])
                    kill(pid, SIGTERM)
                    let timeout = configuration.stopTimeout
                    timers.append(Task {
                        try? await Task.sleep(for: timeout)
                        if !Task.isCancelled { continuation.yield(.retireTimeout(slot, pid: pid)) }
                    })
                }
                current = active(pool)
            }
            publishCounts()
        }

        for (pool, count) in configuration.processes {
            for index in 0..<count { start(Slot(pool: pool, index: index + 1)) }
        }
        publishCounts()
        if let scaler = configuration.scaler {
            let interval = configuration.scaleInterval
            timers.append(Task {
                while !Task.isCancelled {
                    let targets = await scaler(running.get())
                    continuation.yield(.scale(targets))
                    try? await Task.sleep(for: interval)
                }
            })
        }
        if children.isEmpty && configuration.processes.allSatisfy({ $0.count == 0 }) {
            logger.notice("no pool has processes to run (every processes.min is 0); waiting for SIGTERM or SIGINT")
        }

        loop: for await event in events {
            switch event {
            case .exited(let slot, let pid, let status, let ranFor):
                if children[slot]?.processIdentifier == pid || pid == 0 { children[slot] = nil }
                if retiring.contains(slot) && children[slot] == nil {
                    retiring.remove(slot)
                    logger.info("worker scaled in", metadata: ["slot": "\(slot)", "pid": "\(pid)", "status": "\(status)"])
                    if stopping && children.isEmpty { break loop }
                    publishCounts()
                    continue
                }
                if stopping {
                    logger.info("worker stopped", metadata: ["slot": "\(slot)", "pid": "\(pid)", "status": "\(status)", "left": "\(children.count)"])
                    if children.isEmpty { break loop }
                    continue
                }
                if ranFor >= configuration.healthyAfter { failures[slot] = 0 }
                failures[slot, default: 0] += 1
                let delay = Self.restartDelay(failures: failures[slot]!, base: configuration.restartDelay, maximum: configuration.maximumRestartDelay)
                pendingRestart.insert(slot)
                publishCounts()
                logger.warning("worker exited; restarting it", metadata: [
                    "slot": "\(slot)", "pid": "\(pid)", "status": "\(status)", "ran_for": "\(ranFor)",
                    "exits_in_a_row": "\(failures[slot]!)", "restart_in": "\(delay)",
                ])
                timers.append(Task {
                    try? await Task.sleep(for: delay)
                    continuation.yield(.restart(slot))
                })
            case .restart(let slot):
                // Not when the slot was scaled in meanwhile (no longer waiting to restart).
                if !stopping && children[slot] == nil && pendingRestart.remove(slot) != nil { start(slot) }
            case .scale(let wanted):
                guard !stopping else { continue }
                for (pool, target) in wanted.sorted(by: { $0.key < $1.key }) where targets[pool] != nil {
                    targets[pool] = max(0, target.count)
                    scale(pool, to: max(0, target.count), reason: target.reason)
                }
            case .retireTimeout(let slot, let pid):
                if retiring.contains(slot), let process = children[slot], process.processIdentifier == pid, process.isRunning {
                    logger.warning("a worker scaled in is still running after the stop timeout: killing it (SIGKILL); its jobs come back when their leases expire", metadata: [
                        "slot": "\(slot)", "pid": "\(pid)", "timeout": "\(configuration.stopTimeout)",
                    ])
                    kill(pid, SIGKILL)
                }
            case .signal(let signal):
                if !stopping {
                    stopping = true
                    pendingRestart.removeAll()
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

/// The processes each pool runs, read by the scaler's task while the supervisor's loop changes them.
final class RunningCounts: Sendable {
    private let counts = Mutex<[String: Int]>([:])

    func set(_ value: [String: Int]) { counts.withLock { $0 = value } }
    func get() -> [String: Int] { counts.withLock { $0 } }
}
