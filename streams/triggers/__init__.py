"""Rules as data and the pure decisions made with them. Imports neither faust nor boto3."""
