import JobProtocol
import RedisClient
import Synchronization

/// Wakes waiters when a job changes state: one pub/sub connection per process, pattern-subscribed to every
/// queue's event channel, fanning messages out to the waiters of each job id. No polling.
///
/// On a Redis Cluster the scripts publish only while their own node counts a listener (`PUBSUB NUMPAT`, per node), so
/// there is one such connection per master: every node counts one, and each gets every message (a cluster forwards a
/// `PUBLISH` to every node): a waiter is woken once per master, and re-reads its job that many times.
final class JobEvents: Sendable {
    private struct State {
        var subscribers: [RedisSubscriber] = []
        /// Subscriptions that were live at least once, and how many must be before waiters are told it is live.
        var live: Set<Int> = []
        var expected = 1
        var ready = false
        var readyWaiters: [CheckedContinuation<Void, Never>] = []
        var nextToken = 0
        var streams: [String: [Int: (signal: AsyncSignal, progress: Bool)]] = [:]
    }

    private let configuration: JobFarmConfiguration
    private let state = Mutex(State())

    init(configuration: JobFarmConfiguration) {
        self.configuration = configuration
    }

    /// Starts the subscription if needed and waits (up to `limit`) until it is live.
    func start(waitingUpTo limit: Duration = .seconds(3)) async {
        var nodes = [configuration.redis]
        if configuration.redis.isCluster, state.withLock({ $0.subscribers.isEmpty }) {
            // One subscription per master (read from the slot map once; a failover later is a known gap).
            let client = RedisClient(configuration: configuration.redis, name: "events-map")
            if let masters = try? await client.masters() { nodes = masters.map(configuration.redis.clusterNode) }
            client.close()
        }
        let started: [RedisSubscriber] = state.withLock { state in
            if !state.subscribers.isEmpty { return [] }
            state.expected = nodes.count
            state.subscribers = nodes.enumerated().map { index, node in
                RedisSubscriber(
                    configuration: node, patterns: ["\(configuration.namespace):{*}:events"],
                    onReady: { [weak self] in self?.connected(index) },
                    onMessage: { [weak self] channel, body in self?.deliver(channel: channel, body: body) })
            }
            return state.subscribers
        }
        for subscriber in started { subscriber.start() }
        if state.withLock({ $0.ready }) { return }
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                await withCheckedContinuation { continuation in
                    let resumeNow = self.state.withLock { state -> Bool in
                        if state.ready { return true }
                        state.readyWaiters.append(continuation)
                        return false
                    }
                    if resumeNow { continuation.resume() }
                }
            }
            group.addTask { try? await Task.sleep(for: limit) }
            await group.next()
            group.cancelAll()
            // The waiter that lost the race is resumed by `connected()` or left to the timeout's sleep.
        }
    }

    /// A signal fired by every event (`succeeded`, `progress 0.5`, a reconnect…) of one job id.
    /// - Parameter progress: also fire on progress events (a waiter that shows progress); otherwise only on
    ///   state changes, so a waiter re-reads the job only when there is something new to read.
    func subscribe(id: String, progress: Bool) -> (token: Int, signal: AsyncSignal) {
        let signal = AsyncSignal()
        let token = state.withLock { state -> Int in
            state.nextToken += 1
            state.streams[id, default: [:]][state.nextToken] = (signal, progress)
            return state.nextToken
        }
        return (token, signal)
    }

    func unsubscribe(id: String, token: Int) {
        state.withLock { state in
            state.streams[id]?.removeValue(forKey: token)
            if state.streams[id]?.isEmpty == true { state.streams[id] = nil }
        }
    }

    func stop() {
        for subscriber in state.withLock({ $0.subscribers }) { subscriber.stop() }
    }

    private func connected(_ index: Int) {
        let (waiters, all) = state.withLock { state in
            state.live.insert(index)
            state.ready = state.live.count >= state.expected
            if !state.ready { return ([CheckedContinuation<Void, Never>](), [AsyncSignal]()) }
            let waiters = state.readyWaiters
            state.readyWaiters = []
            return (waiters, state.streams.values.flatMap(\.values).map(\.signal))
        }
        for waiter in waiters { waiter.resume() }
        // Messages may have been missed while disconnected: every waiter re-reads its job.
        for signal in all { signal.fire() }
    }

    private func deliver(channel: String, body: [UInt8]) {
        let text = String(decoding: body, as: UTF8.self)
        guard let space = text.firstIndex(of: " ") else { return }
        let id = String(text[..<space])
        let event = String(text[text.index(after: space)...])
        let isProgress = event.hasPrefix("progress")
        let targets = state.withLock { state in
            state.streams[id].map { $0.values.filter { !isProgress || $0.progress }.map(\.signal) } ?? []
        }
        for signal in targets { signal.fire() }
    }
}

extension JobFarm {
    /// Waits until the job is final (succeeded, dead or cancelled) and returns its status.
    /// Woken by published events, not by polling; `onUpdate` sees every progress change on the way.
    /// - Throws: `JobFarmError.notFound` for an unknown id, `.timedOut` after `timeout`, `CancellationError` when the
    ///   calling task is cancelled.
    public func wait(
        for id: String, queue: String? = nil, timeout: Duration = .seconds(60),
        onUpdate: (@Sendable (JobStatus) -> Void)? = nil
    ) async throws -> JobStatus {
        await events.start()
        let (token, signal) = events.subscribe(id: id, progress: onUpdate != nil)
        defer { events.unsubscribe(id: id, token: token) }
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        var knownQueue = queue
        while true {
            guard let status = try await status(id: id, queue: knownQueue) else {
                throw JobFarmError.notFound("no job \(id)\(queue.map { " in queue \($0)" } ?? ""): never enqueued, or removed after the retention period")
            }
            knownQueue = status.queue
            onUpdate?(status)
            if status.state.isTerminal { return status }
            let remaining = deadline - clock.now
            if remaining <= .zero {
                throw JobFarmError.timedOut("job \(id) is still \(status.state.rawValue) after \(timeout); wait again or check `jobfarm status \(id)`")
            }
            // Wait for the next event, or re-check after a while in case the subscription is down; a cancelled
            // caller (a client gone, a server shutting down) is answered at once.
            await withTaskCancellationHandler {
                await signal.wait(upTo: min(remaining, .seconds(5)))
            } onCancel: {
                signal.fire()
            }
            try Task.checkCancellation()
        }
    }
}
