"""The tenant side: which target the workbook talks to (emulator or a real tenant), the app registrations and
consent it provisions there, waiting for directory replication, and cleaning up afterwards."""
