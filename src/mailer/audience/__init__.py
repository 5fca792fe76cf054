"""Who is mailed: subscriber CSV files read, validated and imported into lists."""
