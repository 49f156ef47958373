import Synchronization
import JobProtocol
import Logging
import RedisClient

/// What a producer asks for: one job.
public struct EnqueueRequest: Sendable {
    public var kind: String
    public var queue: String
    /// `nil` uses the configuration's default tier.
    public var tier: String?
    public var payload: JSONValue
    /// Run no earlier than this long from now.
    public var delay: Duration?
    /// Run no earlier than this time (ms since 1970); wins over `delay`.
    public var runAt: Int64?
    public var maxAttempts: Int
    public var timeout: Duration
    /// Same key within the idempotency window → the same job id, no second job (`enqueueReporting` says
    /// `duplicate` and gives the first job's id).
    public var idempotencyKey: String?
    /// How long the idempotency key is kept (from the first enqueue under it); `nil`: the farm's
    /// `idempotencyWindow` (24 h by default). After the window the same key makes a new job.
    public var idempotencyWindow: Duration?
    public var trace: [String: String]
    /// A caller-chosen id (retrying a submission with the same id never makes a second job).
    public var id: String?
    /// The pipeline run (and step, item) or batch the job belongs to, written into its job hash so that the
    /// scripts ending it tell the run (docs/PIPELINES.md, "Engine design"). Such a job takes the general path.
    public var links: JobLinks?

    public init(
        kind: String, queue: String = "default", tier: String? = nil, payload: JSONValue = .null,
        delay: Duration? = nil, runAt: Int64? = nil, maxAttempts: Int = 5, timeout: Duration = .seconds(300),
        idempotencyKey: String? = nil, idempotencyWindow: Duration? = nil, trace: [String: String] = [:], id: String? = nil
    ) {
        self.kind = kind
        self.queue = queue
        self.tier = tier
        self.payload = payload
        self.delay = delay
        self.runAt = runAt
        self.maxAttempts = maxAttempts
        self.timeout = timeout
        self.idempotencyKey = idempotencyKey
        self.idempotencyWindow = idempotencyWindow
        self.trace = trace
        self.id = id
    }
}

/// What became of one enqueued job.
public struct EnqueueResult: Sendable, Equatable, CustomStringConvertible {
    /// The job's id: the new job's, or for a duplicate the original job's.
    public var id: String
    /// Nothing new was made: the id was in use already, or the idempotency key was seen within its window (`id` is
    /// then the job first enqueued under it).
    public var duplicate: Bool

    public init(id: String, duplicate: Bool) {
        self.id = id
        self.duplicate = duplicate
    }

    /// `<id>`, or `<id> duplicate`, as the CLI prints it.
    public var description: String { duplicate ? "\(id) duplicate" : id }
}

extension JobFarm {
    /// Enqueues one job; returns its id (the existing id when the idempotency key was seen before).
    @discardableResult
    public func enqueue(_ request: EnqueueRequest) async throws -> String {
        try await enqueueReporting([request])[0].id
    }

    /// Enqueues many jobs: one script call per queue and chunk of up to `chunkSize` jobs, pipelined.
    /// Returns the ids in request order. Safe to repeat after a connection error (ids are chosen here).
    public func enqueue(_ requests: [EnqueueRequest], chunkSize: Int = 1000) async throws -> [String] {
        try await enqueueReporting(requests, chunkSize: chunkSize).map(\.id)
    }

    /// Enqueues many jobs as `enqueue` does, and says per job (in request order) whether it was a duplicate: its
    /// id already in use (a repeated deterministic id), or its idempotency key seen within its window, with the
    /// original job's id.
    public func enqueueReporting(_ requests: [EnqueueRequest], chunkSize: Int = 1000) async throws -> [EnqueueResult] {
        let now = WallClock.nowMilliseconds()
        // Every request is checked before anything is sent (one that is not valid fails the call, nothing enqueued);
        // the envelopes are built chunk by chunk as they are sent, so that building one chunk overlaps Redis running
        // the ones before it.
        var delays: [Int64] = []
        delays.reserveCapacity(requests.count)
        for request in requests { delays.append(try checkedDelay(request, now: now)) }
        var generator = FastRandom()
        var built = [JobEnvelope?](repeating: nil, count: requests.count)
        func envelope(_ index: Int) -> (env: JobEnvelope, delayMs: Int64) { (built[index]!, delays[index]) }
        func build(_ chunk: [Int]) {
            for index in chunk { built[index] = makeCheckedEnvelope(requests[index], delayMs: delays[index], now: now, generator: &generator) }
        }
        // Group by queue (each queue is its own hash slot), keeping request order for the answer.
        // (A run of jobs for one queue, the usual bulk, is collected without hashing the queue's name per job.)
        var order: [String] = []
        var byQueue: [String: [Int]] = [:]
        var run: (queue: String, indices: [Int])?
        for (index, request) in requests.enumerated() {
            if run?.queue == request.queue {
                run!.indices.append(index)
                continue
            }
            if let (queue, indices) = run { byQueue[queue, default: []] += indices }
            if byQueue[request.queue] == nil { order.append(request.queue) }
            run = (request.queue, [index])
        }
        if let (queue, indices) = run { byQueue[queue, default: []] += indices }
        // Encoding a chunk overlaps with Redis running the previous ones: up to `inFlight` chunks are sent
        // while the next is built (one connection; its queue keeps them in order).
        let client = self.client
        let idemTTL = String(configuration.idempotencyWindow.milliseconds)
        let registry = QueueKeys.registry(namespace: configuration.namespace)
        let inFlight = 3
        var results = [EnqueueResult](repeating: EnqueueResult(id: "", duplicate: false), count: requests.count)
        // Bulk requests usually share one payload: encode it once.
        var lastPayload: JSONValue?
        var lastPayloadText = ""
        func collect(_ chunk: [Int], _ reply: RESPValue) throws {
            if let message = reply.errorMessage { throw JobFarmError(reply: message, script: Scripts.enqueue.name) }
            if case .integer = reply {
                // The script answers a count when it created every job it was sent.
                for index in chunk { results[index] = EnqueueResult(id: built[index]!.id, duplicate: false) }
                return
            }
            let returned = reply.array ?? []
            guard returned.count == chunk.count else {
                throw JobFarmError.redisFailed(operation: "enqueue", cause: .unexpectedReply("expected \(chunk.count) ids, got \(returned.count)"))
            }
            // A created job answers its id; a duplicate a one-element array holding the original id.
            for (index, answer) in zip(chunk, returned) {
                if let original = answer.array?.first?.string {
                    results[index] = EnqueueResult(id: original, duplicate: true)
                } else {
                    results[index] = EnqueueResult(id: answer.string ?? "", duplicate: false)
                }
            }
        }
        // The usual bulk (jobs to run now, one tier, no idempotency key) goes through `enqueueNow`, whose entries
        // are built here, stamped with the server's clock as last measured.
        let serverNow = requests.indices.contains(where: { delays[$0] == 0 && requests[$0].idempotencyKey == nil })
            ? await estimatedServerMilliseconds() : nil
        func encodeNow(_ chunk: [Int], queue: String, qt: Int64, tier: String) -> RedisRequest {
            let arguments = Self.enqueueNowArguments(chunk.lazy.map { built[$0]! }, count: chunk.count, queue: queue, qt: qt,
                                                     tier: tier, lastPayload: &lastPayload, lastPayloadText: &lastPayloadText)
            return .packedScript(Scripts.enqueueNow, keys: [keys(queue).prefix], arguments: arguments)
        }
        func encode(_ chunk: [Int], queue: String, register: Bool) -> [RedisRequest] {
            build(chunk)
            let tier = built[chunk[0]]!.tier
            if let serverNow, chunk.count <= 1000,
               chunk.allSatisfy({ delays[$0] == 0 && built[$0]!.idempotencyKey == nil && built[$0]!.tier == tier
                   && requests[$0].links == nil }) {
                var batch: [RedisRequest] = []
                if register { batch.append(.command(RedisCommand("SADD", registry, queue))) }
                batch.append(encodeNow(chunk, queue: queue, qt: serverNow, tier: tier))
                return batch
            }
            var arguments = RedisCommand(queue, String(chunk.count), idemTTL)
            arguments.reserve(bytes: chunk.count * 300, arguments: chunk.count * 5)
            var text: [UInt8] = []
            for index in chunk {
                let (env, delayMs) = envelope(index)
                if lastPayload != env.payload {
                    lastPayload = env.payload
                    lastPayloadText = env.payload.jsonText
                }
                arguments.append(env.id)
                arguments.append(env.tier)
                text.removeAll(keepingCapacity: true)
                env.encode(payloadText: lastPayloadText, into: &text)
                arguments.append(bytes: text)
                arguments.append(delayMs == 0 ? "0" : String(delayMs))
                if let key = env.idempotencyKey {
                    arguments.append("\((requests[index].idempotencyWindow ?? configuration.idempotencyWindow).milliseconds) \(key)")
                } else {
                    arguments.append("")
                }
            }
            if chunk.contains(where: { requests[$0].links != nil }) {
                for index in chunk { arguments.append(requests[index].links?.jsonText ?? "") }
            }
            var batch: [RedisRequest] = []
            if register { batch.append(.command(RedisCommand("SADD", registry, queue))) }
            batch.append(.packedScript(Scripts.enqueue, keys: [keys(queue).prefix], arguments: arguments))
            return batch
        }
        // Safe to repeat: ids are chosen here, and a job that exists is not made twice.
        func send(_ batch: [RedisRequest]) async throws -> RESPValue {
            let replies = try await retrying(for: .seconds(10), what: "enqueue") { try await client.pipeline(batch) }
            if replies.count > 1, replies[0].errorMessage != nil {
                // The registry (SADD in front) failed, the jobs are enqueued: say so once, workers without --queues miss the queue.
                let error = try await registryError(replies[0])
                if reportedProblems.withLock({ $0.insert(error.description).inserted }) {
                    logger.error("enqueue could not register the queue: \(error) (workers started without --queues do not see it)")
                }
            }
            return replies[replies.count - 1]
        }
        if order.count == 1, requests.count <= chunkSize {
            // One chunk (a single job, say): no task group, the lowest latency.
            let chunk = Array(0..<requests.count)
            try collect(chunk, try await send(encode(chunk, queue: order[0], register: !registeredQueues.withLock { $0.contains(order[0]) })))
        } else {
            try await withThrowingTaskGroup(of: ([Int], RESPValue).self) { group in
                var running = 0
                for queue in order {
                    let indices = byQueue[queue]!
                    var register = !registeredQueues.withLock { $0.contains(queue) }
                    for start in stride(from: 0, to: indices.count, by: chunkSize) {
                        let chunk = Array(indices[start..<min(start + chunkSize, indices.count)])
                        let batch = encode(chunk, queue: queue, register: register)
                        register = false
                        if running == inFlight, let (done, reply) = try await group.next() {
                            try collect(done, reply)
                            running -= 1
                        }
                        group.addTask { (chunk, try await send(batch)) }
                        running += 1
                    }
                }
                while let (done, reply) = try await group.next() { try collect(done, reply) }
            }
        }
        registeredQueues.withLock { $0.formUnion(order) }
        return results
    }

    /// Builds and checks the envelope of one request; every error names the field.
    func makeEnvelope(_ request: EnqueueRequest, now: Int64, generator: inout FastRandom) throws -> (env: JobEnvelope, delayMs: Int64) {
        let delayMs = try checkedDelay(request, now: now)
        return (makeCheckedEnvelope(request, delayMs: delayMs, now: now, generator: &generator), delayMs)
    }

    /// Checks one request (every error names the field); returns its delay in ms (0: it runs now).
    func checkedDelay(_ request: EnqueueRequest, now: Int64) throws -> Int64 {
        guard !request.kind.isEmpty, request.kind.utf8.count <= 128 else {
            throw JobFarmError.invalidArgument("kind must be 1–128 characters (got '\(request.kind)')")
        }
        guard QueueKeys.isValidName(request.queue) else {
            throw JobFarmError.invalidArgument("queue name '\(request.queue)' must be 1–64 of A–Z a–z 0–9 _ - .")
        }
        let tier = request.tier ?? configuration.defaultTier
        guard configuration.tiers.contains(tier) else {
            throw JobFarmError.invalidArgument("tier '\(tier)' is not one of \(configuration.tiers.joined(separator: ", "))")
        }
        guard (1...1000).contains(request.maxAttempts) else {
            throw JobFarmError.invalidArgument("max attempts must be 1…1000 (got \(request.maxAttempts))")
        }
        guard request.timeout > .zero else { throw JobFarmError.invalidArgument("timeout must be positive") }
        if let id = request.id, !JobID.isValid(id) {
            throw JobFarmError.invalidArgument("job id '\(id)' must be 1–128 of A–Z a–z 0–9 - _ . :")
        }
        if let key = request.idempotencyKey, key.isEmpty || key.utf8.count > 256 {
            throw JobFarmError.invalidArgument("idempotency key must be 1–256 characters")
        }
        if let window = request.idempotencyWindow, window < .milliseconds(1) {
            throw JobFarmError.invalidArgument("idempotency window must be at least 1 ms (got \(window)); leave it out for the farm's window")
        }
        var delayMs: Int64 = 0
        if let runAt = request.runAt {
            delayMs = max(0, runAt - now)
        } else if let delay = request.delay {
            guard delay >= .zero else { throw JobFarmError.invalidArgument("delay must not be negative") }
            delayMs = delay.milliseconds
        }
        return delayMs
    }

    /// The envelope of a request `checkedDelay` has accepted.
    func makeCheckedEnvelope(_ request: EnqueueRequest, delayMs: Int64, now: Int64, generator: inout FastRandom) -> JobEnvelope {
        JobEnvelope(
            id: request.id ?? JobID.make(milliseconds: now, using: &generator), kind: request.kind, queue: request.queue,
            tier: request.tier ?? configuration.defaultTier, payload: request.payload, maxAttempts: request.maxAttempts, enqueuedAt: now,
            runAt: delayMs > 0 ? now + delayMs : nil, timeoutMilliseconds: request.timeout.milliseconds,
            idempotencyKey: request.idempotencyKey, trace: request.trace)
    }
}

extension JobFarm {
    /// The arguments of `enqueueNow` (Scripts/enqueueNow.lua): queue, count, qt, tier, then per job its id and entry
    /// `"<qt> <tier> <envelope>"`, then each kind of the call with its count (the `enqueued <tier> <kind>` counters). `lastPayload`/`lastPayloadText` keep the last payload's text between calls: bulk
    /// requests usually share one payload, encoded once.
    static func enqueueNowArguments<Envelopes: Sequence<JobEnvelope>>(
        _ envelopes: Envelopes, count: Int, queue: String, qt: Int64, tier: String,
        lastPayload: inout JSONValue?, lastPayloadText: inout String
    ) -> RedisCommand {
        let qtText = String(qt)
        var arguments = RedisCommand(queue, String(count), qtText, tier)
        arguments.reserve(bytes: count * 320, arguments: count * 2)
        let head = Array("\(qtText) \(tier) ".utf8)
        var text: [UInt8] = []
        // A bulk call usually has one kind: the last one seen is checked first.
        var kinds: [(kind: String, count: Int)] = []
        for env in envelopes {
            if lastPayload != env.payload {
                lastPayload = env.payload
                lastPayloadText = env.payload.jsonText
            }
            arguments.append(env.id)
            text.removeAll(keepingCapacity: true)
            text.append(contentsOf: head)
            env.encode(payloadText: lastPayloadText, into: &text)
            arguments.append(bytes: text)
            if let last = kinds.indices.last, kinds[last].kind == env.kind {
                kinds[last].count += 1
            } else if let index = kinds.firstIndex(where: { $0.kind == env.kind }) {
                kinds[index].count += 1
            } else {
                kinds.append((env.kind, 1))
            }
        }
        for (kind, count) in kinds {
            arguments.append(kind)
            arguments.append(String(count))
        }
        return arguments
    }
}
