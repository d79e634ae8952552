"""pixelpipe: a fault-tolerant image-processing pipeline on Apache Kafka."""

__version__ = "0.1.0"
