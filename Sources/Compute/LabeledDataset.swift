/// Row-major features with one integer class label per row.
public struct LabeledDataset: Sendable, Equatable {
    /// `count × featureCount` values, row-major.
    public let features: [Float]
    /// Class index per row (>= 0).
    public let labels: [Int]
    /// Features per row.
    public let featureCount: Int
    /// Optional feature (column) names.
    public let featureNames: [String]?

    /// Creates a dataset, checking sizes and that labels are non-negative.
    public init(features: [Float], labels: [Int], featureCount: Int, featureNames: [String]? = nil) throws {
        guard featureCount > 0 else { throw ComputeError.invalidArgument("featureCount must be > 0, got \(featureCount)") }
        guard features.count == labels.count * featureCount else {
            throw ComputeError.shapeMismatch("\(features.count) feature values for \(labels.count) rows × \(featureCount) features")
        }
        if let i = labels.firstIndex(where: { $0 < 0 }) {
            throw ComputeError.invalidArgument("label of row \(i) is \(labels[i]); class labels must be >= 0")
        }
        if let names = featureNames, names.count != featureCount {
            throw ComputeError.shapeMismatch("\(names.count) feature names for \(featureCount) features")
        }
        self.features = features
        self.labels = labels
        self.featureCount = featureCount
        self.featureNames = featureNames
    }

    /// Number of rows.
    public var count: Int { labels.count }

    /// Number of classes (`max label + 1`).
    public var classCount: Int { (labels.max() ?? -1) + 1 }

    /// The rows at `indices`, in that order.
    public func subset(_ indices: [Int]) -> LabeledDataset {
        let f = featureCount
        var x = [Float]()
        x.reserveCapacity(indices.count * f)
        for i in indices { x.append(contentsOf: features[(i * f)..<((i + 1) * f)]) }
        // Sizes are consistent by construction.
        return LabeledDataset(unchecked: x, labels: indices.map { labels[$0] }, featureCount: f, featureNames: featureNames)
    }

    /// A stratified split: in each class, a `testFraction` share of rows (rounded,
    /// at least one when the class has two or more rows) goes to `test`, after a seeded shuffle.
    public func stratifiedSplit(testFraction: Double, seed: UInt64) throws -> (train: LabeledDataset, test: LabeledDataset) {
        let (tr, te) = try LabeledDataset.stratifiedIndices(labels: labels, testFraction: testFraction, seed: seed)
        return (subset(tr), subset(te))
    }

    /// Index form of `stratifiedSplit`; both index lists are sorted. Takes any integer labels (a streamed dataset
    /// keeps them as `[Int32]`), with the same result for the same values.
    public static func stratifiedIndices<Label: BinaryInteger>(labels: [Label], testFraction: Double, seed: UInt64) throws -> (train: [Int], test: [Int]) {
        guard testFraction > 0, testFraction < 1 else {
            throw ComputeError.invalidArgument("test fraction must be in (0, 1), got \(testFraction)")
        }
        var rng = SeededRandom(seed: seed)
        var byClass: [Int: [Int]] = [:]
        for (i, y) in labels.enumerated() { byClass[Int(y), default: []].append(i) }
        var train: [Int] = [], test: [Int] = []
        for y in byClass.keys.sorted() {
            var idx = byClass[y] ?? []
            rng.shuffle(&idx)
            var nTest = Int((Double(idx.count) * testFraction).rounded())
            if idx.count >= 2 { nTest = min(max(nTest, 1), idx.count - 1) } else { nTest = 0 }
            test.append(contentsOf: idx.prefix(nTest))
            train.append(contentsOf: idx.dropFirst(nTest))
        }
        return (train.sorted(), test.sorted())
    }

    init(unchecked features: [Float], labels: [Int], featureCount: Int, featureNames: [String]?) {
        self.features = features
        self.labels = labels
        self.featureCount = featureCount
        self.featureNames = featureNames
    }
}
