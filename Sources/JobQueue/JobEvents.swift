import JobProtocol
import RedisClient
import Synchronization

/// Wakes waiters when a job changes state: one pub/sub connection per process, pattern-subscribed to every
/// queue's event channel, fanning messages out to the waiters of each job id. No polling.
///
/// The subscription is open only while someone waits (and `linger` after the last waiter left, so that a stream of
/// short waits does not open and close it each time): the scripts publish only while someone listens, so an idle
/// subscription would make every job transition of the farm publish an event.
///
/// On a Redis Cluster the waiters use sharded pub/sub instead (`SSUBSCRIBE`, PROTOCOL.md §14): one subscription per
/// waited queue, on the master that owns the queue's slot (`ShardedSubscriber` follows the slot when it moves and
/// after a failover), and the scripts `SPUBLISH` on that node alone while it counts a sharded listener.
final class JobEvents: Sendable {
    private struct State {
        /// One per node listened to (every master of a cluster); empty while closed.
        var subscribers: [RedisSubscriber] = []
        /// Which subscribers `ready` is about (a stopped one may still report in).
        var generation = 0
        /// Subscriptions of this generation that were live at least once, and how many must be before waiters are
        /// told it is live.
        var live: Set<Int> = []
        var expected = 1
        var ready = false
        var readyWaiters: [CheckedContinuation<Void, Never>] = []
        var nextToken = 0
        var streams: [String: [Int: (signal: AsyncSignal, progress: Bool)]] = [:]
        /// Bumped whenever the last waiter leaves: a pending close goes ahead only if no waiter came and went since.
        var idleMark = 0
        /// On a cluster: one sharded subscription per waited queue, and whether it was live at least once.
        var sharded: [String: (subscriber: ShardedSubscriber, live: Bool)] = [:]
    }

    private let configuration: JobFarmConfiguration
    private let state = Mutex(State())
    /// How long the subscription stays open after the last waiter left.
    let linger: Duration

    init(configuration: JobFarmConfiguration, linger: Duration = .seconds(2)) {
        self.configuration = configuration
        self.linger = linger
    }

    /// Whether the pub/sub subscription is open (or opening).
    var isSubscribed: Bool { state.withLock { !$0.subscribers.isEmpty || !$0.sharded.isEmpty } }

    /// Starts the subscription if needed and waits (up to `limit`) until it is live. On a cluster it starts nothing
    /// (the subscription is per queue: `listen(queue:)`).
    func start(waitingUpTo limit: Duration = .seconds(3)) async {
        if configuration.redis.isCluster { return }
        let nodes = [configuration.redis]
        let started: [RedisSubscriber] = state.withLock { state in
            if !state.subscribers.isEmpty { return [] }
            state.generation += 1
            state.ready = false
            state.live = []
            state.expected = nodes.count
            let generation = state.generation
            state.subscribers = nodes.enumerated().map { index, node in
                RedisSubscriber(
                    configuration: node, patterns: ["\(configuration.namespace):{*}:events"],
                    onReady: { [weak self] in self?.connected(generation: generation, index: index) },
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

    /// Removes a waiter; when it was the last, closes the subscription `linger` later unless a waiter came since.
    func unsubscribe(id: String, token: Int) {
        let mark: Int? = state.withLock { state in
            state.streams[id]?.removeValue(forKey: token)
            if state.streams[id]?.isEmpty == true { state.streams[id] = nil }
            guard state.streams.isEmpty, !state.subscribers.isEmpty || !state.sharded.isEmpty else { return nil }
            state.idleMark += 1
            return state.idleMark
        }
        guard let mark else { return }
        let linger = self.linger
        Task { [weak self] in
            try? await Task.sleep(for: linger)
            self?.closeIfIdle(mark: mark)
        }
    }

    private func closeIfIdle(mark: Int) {
        let (idle, idleSharded): ([RedisSubscriber], [ShardedSubscriber]) = state.withLock { state in
            guard state.streams.isEmpty, state.idleMark == mark else { return ([], []) }
            let subscribers = state.subscribers
            let sharded = state.sharded.values.map(\.subscriber)
            state.subscribers = []
            state.sharded = [:]
            state.ready = false
            return (subscribers, sharded)
        }
        for subscriber in idle { subscriber.stop() }
        for subscriber in idleSharded { subscriber.stop() }
    }

    func stop() {
        let (subscribers, sharded) = state.withLock { ($0.subscribers, $0.sharded.values.map(\.subscriber)) }
        for subscriber in subscribers { subscriber.stop() }
        for subscriber in sharded { subscriber.stop() }
    }

    /// On a cluster: makes sure the sharded subscription to `queue`'s event channel is open, waiting (up to `limit`)
    /// until it is live. Returns true when it had to open or wait for it, so that the caller reads its job again
    /// (an event may have gone out before the subscription was live); false on one server and when it was live.
    func listen(queue: String, waitingUpTo limit: Duration = .seconds(3)) async -> Bool {
        guard configuration.redis.isCluster else { return false }
        let channel = QueueKeys(namespace: configuration.namespace, queue: queue).events
        // Only the waiter that opens it waits for it; one that finds it opening waits for events, re-reading every
        // 5 s at worst, and is signalled when it goes live.
        let subscriber: ShardedSubscriber? = state.withLock { state in
            if state.sharded[queue] != nil { return nil }
            let subscriber = ShardedSubscriber(
                configuration: configuration.redis, channel: channel,
                onReady: { [weak self] in self?.shardedConnected(queue: queue) },
                onMessage: { [weak self] channel, body in self?.deliver(channel: channel, body: body) })
            state.sharded[queue] = (subscriber, false)
            return subscriber
        }
        guard let subscriber else { return false }
        subscriber.start()
        // Polled: this wait happens once per queue and process (until the linger closes it), and a subscription that
        // cannot be made (the cluster down) must not hold the waiter past `limit`.
        let deadline = ContinuousClock.now + limit
        while ContinuousClock.now < deadline, !(state.withLock { $0.sharded[queue]?.live ?? true }) {
            try? await Task.sleep(for: .milliseconds(5))
        }
        return true
    }

    private func shardedConnected(queue: String) {
        let all = state.withLock { state -> [AsyncSignal] in
            guard state.sharded[queue] != nil else { return [] }
            state.sharded[queue]?.live = true
            return state.streams.values.flatMap(\.values).map(\.signal)
        }
        // Messages may have been missed while the subscription moved: every waiter re-reads its job.
        for signal in all { signal.fire() }
    }

    private func connected(generation: Int, index: Int) {
        let (waiters, all) = state.withLock { state in
            guard state.generation == generation else {
                return ([CheckedContinuation<Void, Never>](), [AsyncSignal]())
            }
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
        // Registered before the subscription starts, so that an idle subscription closing now cannot leave this
        // waiter without one.
        let (token, signal) = events.subscribe(id: id, progress: onUpdate != nil)
        defer { events.unsubscribe(id: id, token: token) }
        await events.start()
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        var knownQueue = queue
        while true {
            guard let status = try await status(id: id, queue: knownQueue) else {
                throw JobFarmError.notFound("no job \(id)\(queue.map { " in queue \($0)" } ?? ""): never enqueued, or removed after the retention period")
            }
            knownQueue = status.queue
            // On a cluster the subscription is per queue, known from the first read: read again once it is live.
            if await events.listen(queue: status.queue) { continue }
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

extension JobFarm {
    /// Whether this process's event subscription is open: only while a `wait` is under way, and for a short linger
    /// after the last one (the scripts publish events only while someone listens).
    public var listensForEvents: Bool { events.isSubscribed }
}
