"""Budget: a price book (AWS Pricing API, spot history, static fallback), a planner that
turns a measured per-video rate into instance type × worker count for a deadline, and a
renderer that caps a Ray cluster config's max_workers by a budget."""
