"""The files the toolkit writes and reads, one home each: records, their JSON, and the one place they are checked."""
