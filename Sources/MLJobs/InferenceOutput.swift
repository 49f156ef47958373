import JobProtocol

extension InferenceJob {
    /// One class in a row's top-k.
    public struct Score: Encodable, Sendable, Equatable {
        public var index: Int
        public var label: String?
        public var probability: Float

        /// A class's score: its index among the model's outputs, its label if the model has labels, its probability.
        public init(index: Int, label: String?, probability: Float) {
            self.index = index
            self.label = label
            self.probability = probability
        }
    }

    /// Every row's top-k in flat arrays (no array per row): what `Output` keeps and writes as the `topK` text.
    struct TopScores: Sendable {
        /// Where each row's scores end in `indices` and `probabilities` (row r: `ends[r-1] ..< ends[r]`).
        var ends: [Int]
        var indices: [Int32]
        var probabilities: [Float]
        /// The label of each class (`index` into it), or of each score when made from `[[Score]]`.
        var labels: Labels

        enum Labels: Sendable {
            case none
            case byClass([String])
            case byScore([String?])
        }

        init(ends: [Int], indices: [Int32], probabilities: [Float], labels: Labels) {
            self.ends = ends
            self.indices = indices
            self.probabilities = probabilities
            self.labels = labels
        }

        init(_ rows: [[Score]]) {
            var end = 0
            ends = rows.map { end += $0.count; return end }
            indices = rows.flatMap { $0.map { Int32(truncatingIfNeeded: $0.index) } }
            probabilities = rows.flatMap { $0.map(\.probability) }
            let labels = rows.flatMap { $0.map(\.label) }
            self.labels = labels.allSatisfy({ $0 == nil }) ? .none : .byScore(labels)
        }

        var rows: [[Score]] {
            var start = 0
            return ends.map { end in
                defer { start = end }
                return (start..<end).map { s in
                    let index = Int(indices[s])
                    let label: String?
                    switch labels {
                    case .none: label = nil
                    case .byClass(let names): label = names[index]
                    case .byScore(let names): label = names[s]
                    }
                    return Score(index: index, label: label, probability: probabilities[s])
                }
            }
        }

        /// `{"index":` + digits + `,"label":` + `,"probability":` + a float + `}` + `,`, besides the label.
        static let scoreOverhead = 9 + JSONTextCursor.maxIntegerLength + 9 + 15 + FloatText.maxFloatLength + 2

        var textCapacity: Int {
            var labelCapacity = 0
            switch labels {
            case .none: break
            case .byClass(let names): labelCapacity = names.reduce(0) { Swift.max($0, JSONTextCursor.stringCapacity($1)) }
            case .byScore(let names): labelCapacity = names.reduce(0) { Swift.max($0, $1.map(JSONTextCursor.stringCapacity) ?? 0) }
            }
            return 2 + ends.count * 3 + indices.count * (Self.scoreOverhead + labelCapacity)
        }

        /// `[[{"index":2,"label":"cat","probability":0.91},…],…]`: a class's `{"index":…,"label":…,"probability":`
        /// written once per class and copied per score.
        func write(to cursor: inout JSONTextCursor) {
            var prefixes: [[UInt8]] = []
            if case .byClass(let names) = labels {
                prefixes = names.indices.map { c in
                    var text = [UInt8](repeating: 0, count: 9 + JSONTextCursor.maxIntegerLength + 9 + JSONTextCursor.stringCapacity(names[c]) + 15)
                    let count = text.withUnsafeMutableBufferPointer { buffer in
                        var prefix = JSONTextCursor(buffer)
                        prefix.raw(#"{"index":"#)
                        prefix.integer(c)
                        prefix.raw(#","label":"#)
                        prefix.string(names[c])
                        prefix.raw(#","probability":"#)
                        return prefix.count
                    }
                    text.removeLast(text.count - count)
                    return text
                }
            }
            cursor.byte(UInt8(ascii: "["))
            var start = 0
            for (r, end) in ends.enumerated() {
                cursor.raw(r == 0 ? "[" : ",[")
                for s in start..<end {
                    if s > start { cursor.byte(UInt8(ascii: ",")) }
                    let index = Int(indices[s])
                    switch labels {
                    case .byClass:
                        cursor.raw(prefixes[index])
                    case .none:
                        cursor.raw(#"{"index":"#)
                        cursor.integer(index)
                        cursor.raw(#","probability":"#)
                    case .byScore(let names):
                        cursor.raw(#"{"index":"#)
                        cursor.integer(index)
                        if let label = names[s] {
                            cursor.raw(#","label":"#)
                            cursor.string(label)
                        }
                        cursor.raw(#","probability":"#)
                    }
                    cursor.float(probabilities[s])  // `null` if not finite (softmax gives finite values)
                    cursor.byte(UInt8(ascii: "}"))
                }
                cursor.byte(UInt8(ascii: "]"))
                start = end
            }
            cursor.byte(UInt8(ascii: "]"))
        }
    }

    /// Result.
    public struct Output: JSONTextWritable, Sendable {
        public var model: String
        public var sha256: String
        public var precision: String
        public var rows: Int
        public var predictions: [Int]
        /// Each row's most probable classes, highest first (ties: the lower index first).
        public var topK: [[Score]] {
            get { scores.rows }
            set { scores = TopScores(newValue) }
        }
        var scores: TopScores
        /// Rows of numbers, or a float32 tensor object with `outputFormat: "binary"`.
        public var logits: FloatMatrix?
        public var probabilities: FloatMatrix?
        /// Rows and requests in the forward pass this job joined (dynamic batching).
        public var batchRows: Int
        public var batchRequests: Int

        /// An answer from rows of scores (each row may have its own length, each score its own label).
        public init(model: String, sha256: String, precision: String, rows: Int, predictions: [Int], topK: [[Score]],
                    logits: FloatMatrix?, probabilities: FloatMatrix?, batchRows: Int, batchRequests: Int) {
            self.init(model: model, sha256: sha256, precision: precision, rows: rows, predictions: predictions, scores: TopScores(topK),
                      logits: logits, probabilities: probabilities, batchRows: batchRows, batchRequests: batchRequests)
        }

        init(model: String, sha256: String, precision: String, rows: Int, predictions: [Int], scores: TopScores,
             logits: FloatMatrix?, probabilities: FloatMatrix?, batchRows: Int, batchRequests: Int) {
            self.model = model
            self.sha256 = sha256
            self.precision = precision
            self.rows = rows
            self.predictions = predictions
            self.scores = scores
            self.logits = logits
            self.probabilities = probabilities
            self.batchRows = batchRows
            self.batchRequests = batchRequests
        }

        enum CodingKeys: String, CodingKey {
            case model, sha256, precision, rows, predictions, topK, logits, probabilities, batchRows, batchRequests
        }

        /// For encoders other than `JSONValueEncoder.encodeText` (which calls `writeJSONText`): the same members,
        /// `topK` as its text.
        public func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(model, forKey: .model)
            try container.encode(sha256, forKey: .sha256)
            try container.encode(precision, forKey: .precision)
            try container.encode(rows, forKey: .rows)
            try container.encode(predictions, forKey: .predictions)
            try container.encode(topKText, forKey: .topK)
            try container.encodeIfPresent(logits, forKey: .logits)
            try container.encodeIfPresent(probabilities, forKey: .probabilities)
            try container.encode(batchRows, forKey: .batchRows)
            try container.encode(batchRequests, forKey: .batchRequests)
        }

        /// The `topK` member's text.
        var topKText: JSONText {
            var bytes = [UInt8](repeating: 0, count: scores.textCapacity)
            let count = bytes.withUnsafeMutableBufferPointer { buffer in
                var cursor = JSONTextCursor(buffer)
                scores.write(to: &cursor)
                return cursor.count
            }
            bytes.removeLast(bytes.count - count)
            return JSONText(bytes: bytes)
        }

        public var jsonTextCapacity: Int {
            160 + JSONTextCursor.stringCapacity(model) + JSONTextCursor.stringCapacity(sha256) + JSONTextCursor.stringCapacity(precision)
                + 3 * JSONTextCursor.maxIntegerLength + 2 + predictions.count * (JSONTextCursor.maxIntegerLength + 1)
                + scores.textCapacity + (logits?.jsonTextCapacity ?? 0) + (probabilities?.jsonTextCapacity ?? 0)
        }

        /// The members in the order of `CodingKeys`, as the synthesized encoding wrote them.
        public func writeJSONText(to cursor: inout JSONTextCursor) {
            cursor.raw(#"{"model":"#)
            cursor.string(model)
            cursor.raw(#","sha256":"#)
            cursor.string(sha256)
            cursor.raw(#","precision":"#)
            cursor.string(precision)
            cursor.raw(#","rows":"#)
            cursor.integer(rows)
            cursor.raw(#","predictions":["#)
            for (i, p) in predictions.enumerated() {
                if i > 0 { cursor.byte(UInt8(ascii: ",")) }
                cursor.integer(p)
            }
            cursor.raw(#"],"topK":"#)
            scores.write(to: &cursor)
            if let logits {
                cursor.raw(#","logits":"#)
                logits.writeJSONText(to: &cursor)
            }
            if let probabilities {
                cursor.raw(#","probabilities":"#)
                probabilities.writeJSONText(to: &cursor)
            }
            cursor.raw(#","batchRows":"#)
            cursor.integer(batchRows)
            cursor.raw(#","batchRequests":"#)
            cursor.integer(batchRequests)
            cursor.byte(UInt8(ascii: "}"))
        }
    }

    /// Softmax of each row of `logits` and its `k` most probable classes (ties: the lower index first, as a stable
    /// sort by probability gives), by insertion into a sorted list of `k` — no sort, no array per row.
    /// `probabilities` receives every row's probabilities when given (rows × classes), else one row's scratch.
    static func topScores(logits: UnsafeBufferPointer<Float>, rows: Int, classes: Int, k: Int, labels: [String]?,
                          probabilities: UnsafeMutableBufferPointer<Float>?) -> (predictions: [Int], scores: TopScores) {
        let k = Swift.min(k, classes)
        var predictions = [Int](repeating: 0, count: rows)
        var indices = [Int32](repeating: 0, count: rows * k)
        var top = [Float](repeating: 0, count: rows * k)
        withUnsafeTemporaryAllocation(of: Float.self, capacity: classes) { scratch in
            indices.withUnsafeMutableBufferPointer { indices in
                top.withUnsafeMutableBufferPointer { top in
                    for r in 0..<rows {
                        let z = UnsafeBufferPointer(rebasing: logits[(r * classes)..<((r + 1) * classes)])
                        let p = probabilities.map { UnsafeMutableBufferPointer(rebasing: $0[(r * classes)..<((r + 1) * classes)]) } ?? scratch
                        softmax(z, into: p)
                        let chosen = UnsafeMutableBufferPointer(rebasing: indices[(r * k)..<((r + 1) * k)])
                        let values = UnsafeMutableBufferPointer(rebasing: top[(r * k)..<((r + 1) * k)])
                        select(p, k: k, into: chosen, values: values)
                        predictions[r] = Int(chosen[0])
                    }
                }
            }
        }
        return (predictions, TopScores(ends: (0..<rows).map { ($0 + 1) * k }, indices: indices, probabilities: top,
                                       labels: labels.map { .byClass($0) } ?? .none))
    }

    /// The `k` largest of `p` in order (equal values: the lower index first), their indices into `chosen`.
    static func select(_ p: UnsafeMutableBufferPointer<Float>, k: Int, into chosen: UnsafeMutableBufferPointer<Int32>,
                       values: UnsafeMutableBufferPointer<Float>) {
        if k > 16 {
            // Many classes asked for: a sort beats insertion.
            var order = Array(0..<p.count)
            order.sort { p[$0] != p[$1] ? p[$0] > p[$1] : $0 < $1 }
            for i in 0..<k {
                chosen[i] = Int32(order[i])
                values[i] = p[order[i]]
            }
            return
        }
        var filled = 0
        for c in 0..<p.count {
            let v = p[c]
            if filled == k {
                // Not above the last kept: stays out (NaN compares false: never displaces a number).
                guard v > values[k - 1] else { continue }
            } else {
                filled += 1
            }
            var j = filled - 1
            while j > 0 && v > values[j - 1] {
                values[j] = values[j - 1]
                chosen[j] = chosen[j - 1]
                j -= 1
            }
            values[j] = v
            chosen[j] = Int32(c)
        }
    }
}
