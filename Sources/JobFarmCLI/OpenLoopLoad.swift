import Foundation
import JobQueue
import NIOCore
import NIOHTTP1
import NIOPosix

/// One HTTP/1.1 request as the load generators send it.
struct LoadRequest: Sendable {
    var method: HTTPMethod = .POST
    var path: String
    var headers: [(String, String)] = []
    var body: [UInt8] = []
}

/// Open-loop load: requests scheduled at a fixed rate whatever the server does, each connection sending its share
/// (`rate / connections` per second, at a random phase) one at a time; a request that finds its connection busy
/// waits for it. Latency is measured from the time a request was **scheduled**, not sent, so a server that falls
/// behind is charged for the queue it builds (no coordinated omission, as in wrk2).
enum OpenLoopLoad {
    struct Outcome: Sendable {
        var scheduled = 0
        var completed = 0
        /// Answers other than 2xx, and requests lost with a connection.
        var errors = 0
        /// Requests still unanswered at the end of the grace period.
        var unfinished = 0
        /// Milliseconds, sorted.
        var latencies: [Double] = []
        var duration: Duration = .zero

        func percentile(_ p: Double) -> Double {
            guard !latencies.isEmpty else { return .nan }
            return latencies[min(latencies.count - 1, Int((Double(latencies.count) * p / 100).rounded(.up)) - 1)]
        }
        var achievedRate: Double { Double(completed) / duration.seconds }
    }

    /// Runs `rate` requests per second over `connections` connections for `duration`, then waits up to `grace`
    /// for the answers still due.
    static func run(host: String, port: Int, request: LoadRequest, rate: Double, connections: Int, duration: Duration,
                    grace: Duration = .seconds(5), group: any EventLoopGroup) async throws -> Outcome {
        let handlers = try await connect(host: host, port: port, request: request, count: connections, group: group)
        let interval = Double(connections) / rate
        let start = NIODeadline.now() + .milliseconds(50)
        let end = start + .nanoseconds(duration.nanoseconds)
        for handler in handlers {
            let phase = Double.random(in: 0..<interval)
            handler.eventLoop.execute { handler.start(first: start + .nanoseconds(Int64(phase * 1e9)), interval: interval, end: end) }
        }
        try await Task.sleep(for: duration + .milliseconds(50))
        let clock = ContinuousClock()
        let graceEnd = clock.now + grace
        while clock.now < graceEnd {
            var outstanding = 0
            for handler in handlers { outstanding += try await handler.eventLoop.submit { handler.outstanding }.get() }
            if outstanding == 0 { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        var outcome = Outcome(duration: duration)
        for handler in handlers {
            let part = try await handler.eventLoop.submit { handler.collect() }.get()
            outcome.scheduled += part.scheduled
            outcome.completed += part.completed
            outcome.errors += part.errors
            outcome.unfinished += part.unfinished
            outcome.latencies += part.latencies
        }
        for handler in handlers { try? await handler.close() }
        outcome.latencies.sort()
        return outcome
    }

    /// One request, answered: status and body (for readiness checks and set-up calls).
    static func once(host: String, port: Int, request: LoadRequest, group: any EventLoopGroup) async throws -> (status: Int, body: String) {
        let handler = try await connect(host: host, port: port, request: request, count: 1, group: group)[0]
        defer { Task { try? await handler.close() } }
        return try await handler.eventLoop.flatSubmit { handler.sendOnce() }.get()
    }

    private static func connect(host: String, port: Int, request: LoadRequest, count: Int, group: any EventLoopGroup) async throws -> [OpenLoopConnection] {
        var head = HTTPRequestHead(version: .http1_1, method: request.method, uri: request.path)
        head.headers.add(name: "Host", value: "\(host):\(port)")
        for (name, value) in request.headers { head.headers.add(name: name, value: value) }
        if !request.body.isEmpty || request.method == .POST { head.headers.add(name: "Content-Length", value: String(request.body.count)) }
        var handlers: [OpenLoopConnection] = []
        // Connect in batches: a listen backlog of a few hundred refuses a thousand connects at once.
        for batchStart in stride(from: 0, to: count, by: 100) {
            var pending: [EventLoopFuture<OpenLoopConnection>] = []
            for _ in batchStart..<min(count, batchStart + 100) {
                let loop = group.next()
                let handler = OpenLoopConnection(head: head, body: request.body, eventLoop: loop)
                let future = ClientBootstrap(group: loop)
                    .channelOption(.socketOption(.tcp_nodelay), value: 1)
                    .channelInitializer { channel in
                        channel.pipeline.addHTTPClientHandlers().flatMap { channel.pipeline.addHandler(handler) }
                    }
                    .connect(host: host, port: port)
                    .map { _ in handler }
                pending.append(future)
            }
            for future in pending { handlers.append(try await future.get()) }
        }
        return handlers
    }
}

/// One connection of the open-loop load; every member is touched on its event loop only.
final class OpenLoopConnection: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart

    private let head: HTTPRequestHead
    private let body: ByteBuffer
    private var context: ChannelHandlerContext?
    let eventLoop: any EventLoop
    /// Scheduled times (uptime ns) of requests waiting for the connection, and of the one in flight.
    private var queue: [UInt64] = []
    private var queueHead = 0
    private var inFlight: UInt64?
    private var status = 0
    private var responseBody = ByteBuffer()
    private var once: EventLoopPromise<(status: Int, body: String)>?
    private var scheduled = 0
    private var completed = 0
    private var errors = 0
    private var latencies: [Double] = []
    private var ticker: RepeatedTask?
    private var closed = false

    init(head: HTTPRequestHead, body: [UInt8], eventLoop: any EventLoop) {
        self.head = head
        self.body = ByteBuffer(bytes: body)
        self.eventLoop = eventLoop
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    var outstanding: Int { (inFlight == nil ? 0 : 1) + queue.count - queueHead }

    func start(first: NIODeadline, interval: Double, end: NIODeadline) {
        var next = first.uptimeNanoseconds
        let step = UInt64(interval * 1e9)
        func arm() {
            guard next < end.uptimeNanoseconds else { return }
            eventLoop.scheduleTask(deadline: NIODeadline.uptimeNanoseconds(next)) { [self] in
                enqueue(next)
                next += step
                arm()
            }
        }
        arm()
    }

    private func enqueue(_ at: UInt64) {
        scheduled += 1
        guard !closed else {
            errors += 1
            return
        }
        queue.append(at)
        if inFlight == nil { sendNext() }
    }

    private func sendNext() {
        guard let context, queueHead < queue.count else { return }
        inFlight = queue[queueHead]
        queueHead += 1
        if queueHead > 1024 {
            queue.removeFirst(queueHead)
            queueHead = 0
        }
        write(context)
    }

    private func write(_ context: ChannelHandlerContext) {
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        if body.readableBytes > 0 { context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil) }
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
    }

    func sendOnce() -> EventLoopFuture<(status: Int, body: String)> {
        let promise = eventLoop.makePromise(of: (status: Int, body: String).self)
        once = promise
        if let context { write(context) } else { promise.fail(ChannelError.ioOnClosedChannel) }
        return promise.futureResult
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let response):
            status = Int(response.status.code)
        case .body(var buffer):
            if once != nil { responseBody.writeBuffer(&buffer) }
        case .end:
            if let promise = once {
                once = nil
                promise.succeed((status, String(buffer: responseBody)))
                return
            }
            guard let at = inFlight else { return }
            inFlight = nil
            completed += 1
            if !(200..<300).contains(status) { errors += 1 }
            latencies.append(Double(DispatchTime.now().uptimeNanoseconds &- at) / 1e6)
            sendNext()
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        lose()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        lose()
        context.close(promise: nil)
    }

    private func lose() {
        guard !closed else { return }
        closed = true
        errors += outstanding
        inFlight = nil
        queue.removeAll()
        queueHead = 0
        once?.fail(ChannelError.ioOnClosedChannel)
        once = nil
    }

    func collect() -> (scheduled: Int, completed: Int, errors: Int, unfinished: Int, latencies: [Double]) {
        (scheduled, completed, errors, outstanding, latencies)
    }

    func close() async throws {
        try await eventLoop.flatSubmit { [self] in
            closed = true
            return context?.close() ?? eventLoop.makeSucceededVoidFuture()
        }.get()
    }
}
